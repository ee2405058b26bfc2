"""What a corpus directory must look like, and one clear message when it does not.

Only the standard library is imported here: ``w2v.bin.check_corpus`` runs this before stage 0 of
every recipe and must start in a fraction of a second.

Layouts (the directories lhotse's recipes read):
  LibriSpeech: ``<corpus_dir>/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` + ``.flac``;
    ``corpus_dir`` is the ``LibriSpeech`` directory.
  AISHELL-1: ``<corpus_dir>/data_aishell/wav/<part>/<speaker>/<utt>.wav`` +
    ``<corpus_dir>/data_aishell/transcript/aishell_transcript_v0.8.txt``; ``corpus_dir`` holds
    ``data_aishell/`` (lhotse's downloader makes it ``<target>/aishell``).
  wenet data directory (read for the AISHELL-1 corpus, as wenet's ``examples/aishell/s0/data``):
    ``<corpus_dir>/<part>/wav.scp`` (``utt_id path``, one audio file per utterance) +
    ``<corpus_dir>/<part>/text`` (``utt_id transcript``), or ``<corpus_dir>/<part>/data.list``
    (one JSON object ``{"key", "wav", "txt"}`` per line) instead of both; ``utt2spk`` optional.
    A part with a ``segments`` file is refused (several utterances per audio file are not read).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

LIBRISPEECH_PARTS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
    "train-clean-5", "dev-clean-2",  # mini_librispeech
)
AISHELL_PARTS = ("train", "dev", "test")
AISHELL_TRANSCRIPT = "data_aishell/transcript/aishell_transcript_v0.8.txt"
KNOWN_PARTS = {"librispeech": LIBRISPEECH_PARTS, "aishell": AISHELL_PARTS}

LIBRISPEECH_LAYOUT = "the LibriSpeech layout (<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + .flac)"
AISHELL_LAYOUT = (
    "the AISHELL-1 layout (data_aishell/wav/<part>/<speaker>/<utt>.wav + "
    "data_aishell/transcript/aishell_transcript_v0.8.txt)"
)
WENET_LAYOUT = "a wenet data directory (<part>/wav.scp + <part>/text, or <part>/data.list)"
WENET_FILES = ("wav.scp", "text", "data.list")
_ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
_SHOWN_ENTRIES = 8


class UnknownPartError(ValueError):
    """A part name the corpus does not have."""


class LayoutError(ValueError):
    """The corpus directory is not in the layout the recipe reads; the message says what it is."""


class MissingPartError(FileNotFoundError):
    """Some requested parts have no directory (the message lists the parts that are there)."""


def check_part_names(corpus: str, parts: Sequence[str]) -> None:
    """Raise UnknownPartError naming every unknown part and the known ones."""
    if corpus not in KNOWN_PARTS:
        raise ValueError(f"unknown corpus '{corpus}'; expected one of {sorted(KNOWN_PARTS)}")
    known = KNOWN_PARTS[corpus]
    unknown = [p for p in parts if p not in known]
    if not unknown:
        return
    hints = [f"'{p}' → '{m[0]}'" for p in unknown if (m := difflib.get_close_matches(p, known, n=1))]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise UnknownPartError(f"unknown {corpus} part(s) {list(unknown)}{hint}; expected some of {list(known)}")


def is_wenet_dir(corpus_dir: str | Path) -> bool:
    """``corpus_dir`` holds no ``data_aishell/`` and some sub-directory with wav.scp, text or data.list."""
    corpus_dir = Path(corpus_dir)
    if (corpus_dir / "data_aishell").is_dir():
        return False
    return any((d / name).is_file() for d in _subdirs(corpus_dir) for name in WENET_FILES)


def layout_of(corpus: str, corpus_dir: str | Path) -> str:
    """``"librispeech"``, ``"aishell"`` or ``"wenet"`` (an AISHELL corpus dir in wenet's layout)."""
    return "wenet" if corpus == "aishell" and is_wenet_dir(corpus_dir) else corpus


def part_dir(corpus: str, corpus_dir: str | Path, part: str) -> Path:
    corpus_dir = Path(corpus_dir)
    if corpus == "librispeech" or layout_of(corpus, corpus_dir) == "wenet":
        return corpus_dir / part
    return corpus_dir / "data_aishell" / "wav" / part


def wenet_part_problem(part_dir: str | Path) -> str | None:
    """Why ``part_dir`` is not a wenet part directory (None when it is one), naming the missing file."""
    part_dir = Path(part_dir)
    if not part_dir.is_dir():
        return "does not exist"
    if (part_dir / "segments").is_file():
        return (
            "has a segments file: only one audio file per utterance is read "
            "(wav.scp keyed by utterance, no segments)"
        )
    if (part_dir / "data.list").is_file() or all((part_dir / f).is_file() for f in ("wav.scp", "text")):
        return None
    lacking = [f for f in ("wav.scp", "text") if not (part_dir / f).is_file()]
    return f"has no {' and no '.join(lacking)} (nor a data.list); it holds {_summary(part_dir)}"


def wenet_part_inputs(part_dir: str | Path) -> list[Path]:
    """The files a wenet part is read from: wav.scp + text when both exist, else data.list; + utt2spk."""
    part_dir = Path(part_dir)
    if all((part_dir / f).is_file() for f in ("wav.scp", "text")) or not (part_dir / "data.list").is_file():
        names = ["wav.scp", "text"]
    else:
        names = ["data.list"]
    if (part_dir / "utt2spk").is_file():
        names.append("utt2spk")
    return [part_dir / n for n in names]


def part_inputs(corpus: str, corpus_dir: str | Path, part: str) -> list[Path]:
    """What stage 1 reads for ``part`` (the inputs of its stage record), whether it exists or not.

    LibriSpeech: the part directory; AISHELL-1: the part's wav directory and the transcript;
    wenet: the part's wav.scp and text (or data.list), and utt2spk when there is one.
    """
    corpus_dir = Path(corpus_dir)
    layout = layout_of(corpus, corpus_dir)
    if layout == "wenet":
        return wenet_part_inputs(corpus_dir / part)
    if layout == "aishell":
        return [part_dir(corpus, corpus_dir, part), corpus_dir / AISHELL_TRANSCRIPT]
    return [part_dir(corpus, corpus_dir, part)]


def present_parts(corpus: str, corpus_dir: str | Path) -> list[str]:
    """Part directories that exist (LibriSpeech: only known part names; AISHELL: every dir in wav/;
    wenet: every sub-directory that holds its files)."""
    corpus_dir = Path(corpus_dir)
    if corpus == "librispeech":
        return [p for p in LIBRISPEECH_PARTS if (corpus_dir / p).is_dir()]
    if layout_of(corpus, corpus_dir) == "wenet":
        return sorted(d.name for d in _subdirs(corpus_dir) if wenet_part_problem(d) is None)
    return sorted(p.name for p in _subdirs(corpus_dir / "data_aishell" / "wav"))


def check_layout(corpus: str, corpus_dir: str | Path, parts: Sequence[str], *, missing_ok: bool = False) -> None:
    """Check part names, then that ``corpus_dir`` is in ``corpus``'s layout and holds ``parts``.

    Args:
      corpus: "librispeech" or "aishell" (in the AISHELL-1 layout or a wenet data directory).
      corpus_dir: the directory given as ``--corpus-dir``.
      parts: the requested part names.
      missing_ok: do not raise for part directories that are missing (the caller prepares the
        others and reports them with :func:`missing_parts_message`).
    Raises:
      UnknownPartError: a part name the corpus does not have.
      FileNotFoundError: ``corpus_dir`` does not exist.
      LayoutError: ``corpus_dir`` is another layout, or the right one one level off; one message
        naming the layout expected, what was found and, where it can tell, the directory to give.
      MissingPartError: (unless ``missing_ok``) a requested part directory does not exist (wenet:
        or lacks its wav.scp / text, named in the message).
    """
    check_part_names(corpus, parts)
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        what = "is a file, not a directory" if corpus_dir.exists() else "does not exist"
        raise FileNotFoundError(f"corpus directory {corpus_dir} {what}")
    layout = layout_of(corpus, corpus_dir)
    problems = {"librispeech": _librispeech_problem, "aishell": _aishell_problem, "wenet": _wenet_problem}
    problem = problems[layout](corpus_dir)
    if problem:
        raise LayoutError(problem)
    if not missing_ok:
        if layout == "wenet":
            missing = [corpus_dir / p for p in parts if wenet_part_problem(corpus_dir / p)]
        else:
            missing = [part_dir(corpus, corpus_dir, p) for p in parts if not part_dir(corpus, corpus_dir, p).is_dir()]
        if missing:
            raise MissingPartError(missing_parts_message(corpus, corpus_dir, missing))


def missing_parts_message(corpus: str, corpus_dir: str | Path, missing: Sequence[Path], note: str = "") -> str:
    """'missing part directories: …[ note]; <dir> holds the parts: a, b' (or 'holds no part directory')."""
    corpus_dir = Path(corpus_dir)
    wenet = layout_of(corpus, corpus_dir) == "wenet"
    where = corpus_dir if corpus == "librispeech" or wenet else corpus_dir / "data_aishell" / "wav"
    there = present_parts(corpus, corpus_dir)
    holds = f"holds the parts: {', '.join(there)}" if there else "holds no part directory"
    note = f" {note}" if note else ""
    if wenet:
        absent = [str(m) for m in missing if not Path(m).is_dir()]
        lacking = [f"{m} {wenet_part_problem(m)}" for m in missing if Path(m).is_dir()]
        said = ([f"missing part directories: {', '.join(absent)}"] if absent else []) + lacking
        return f"{'; '.join(said)}{note}; {where} {holds}"
    return f"missing part directories: {', '.join(str(m) for m in missing)}{note}; {where} {holds}"


def _librispeech_problem(d: Path) -> str | None:
    if present_parts("librispeech", d):
        return None
    expected = f"expected {LIBRISPEECH_LAYOUT} in {d}"
    if (d / "LibriSpeech").is_dir():
        return f"{d} holds LibriSpeech/: give --corpus-dir {d / 'LibriSpeech'}"
    if d.name in LIBRISPEECH_PARTS:
        return f"{d} is the LibriSpeech part '{d.name}', not the corpus: give --corpus-dir {d.parent}"
    aishell = _find_aishell(d)
    if aishell is not None:
        at = "" if aishell == d else f" at {aishell}"
        return f"{expected}, found the AISHELL-1 layout (data_aishell/wav, data_aishell/transcript){at}"
    return f"{expected}, found {_summary(d)}"


def _aishell_problem(d: Path) -> str | None:
    data = d / "data_aishell"
    expected = f"expected {AISHELL_LAYOUT} in {d}"
    if data.is_dir():
        wav, transcript = data / "wav", d / AISHELL_TRANSCRIPT
        if not wav.is_dir():
            return f"{expected}, found {data} without wav/ ({_summary(data)})"
        if not transcript.is_file():
            tdir = data / "transcript"
            return f"{expected}, found no transcript {transcript} ({tdir}: {_summary(tdir)})"
        archives = [p for p in wav.iterdir() if p.name.endswith(_ARCHIVES)]
        if archives and not _subdirs(wav):
            return (
                f"{wav} holds {len(archives)} archive(s) ({_names(archives)}) and no part directory: "
                f"extract them in {wav} first (each holds <part>/<speaker>/*.wav)"
            )
        return None
    if d.name == "data_aishell" or ((d / "wav").is_dir() and (d / "transcript").is_dir()):
        return (
            f"{d} is the data_aishell directory itself: "
            f"give --corpus-dir {d.parent} (the directory that holds data_aishell/)"
        )
    if (d / "aishell" / "data_aishell").is_dir():
        return f"{d} holds aishell/data_aishell (lhotse's download location): give --corpus-dir {d / 'aishell'}"
    for up in d.parents:
        if up.name == "data_aishell":
            return f"{d} is inside the data_aishell directory {up}: give --corpus-dir {up.parent}"
    if any((d / name).is_file() for name in WENET_FILES):
        return (
            f"{d} is one part of {WENET_LAYOUT}: give --corpus-dir {d.parent}, "
            f"the directory holding one such directory per part"
        )
    found = _find_librispeech(d)
    if found is not None:
        return f"{expected}, found {found}"
    return f"{expected}, found {_summary(d)}"


def _wenet_problem(d: Path) -> str | None:
    """A wenet data dir is in the layout when some part is complete; parts are checked by name later."""
    if present_parts("aishell", d):
        return None
    partial = [
        f"{p} {wenet_part_problem(p)}" for p in sorted(_subdirs(d)) if any((p / n).is_file() for n in WENET_FILES)
    ]
    return f"expected {WENET_LAYOUT} in {d}, found no complete part: {'; '.join(partial)}"


def _find_aishell(d: Path) -> Path | None:
    """Where an AISHELL-1 ``data_aishell`` is: ``d`` itself, ``d/data_aishell``, ``d/aishell/data_aishell``."""
    for cand in (d, d / "data_aishell", d / "aishell" / "data_aishell"):
        if cand.is_dir() and ((cand / "wav").is_dir() or (cand / "transcript").is_dir()):
            return cand
    return None


def _find_librispeech(d: Path) -> str | None:
    for root in (d, d / "LibriSpeech"):
        parts = present_parts("librispeech", root)
        if parts:
            return f"the LibriSpeech layout at {root} (parts: {', '.join(parts)})"
    if d.name in LIBRISPEECH_PARTS:
        return f"the LibriSpeech part directory '{d.name}'"
    return None


def _subdirs(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if p.is_dir()]
    except OSError:
        return []


def _names(paths: Sequence[Path]) -> str:
    shown = sorted(p.name + ("/" if p.is_dir() else "") for p in paths)
    more = len(shown) - _SHOWN_ENTRIES
    return ", ".join(shown[:_SHOWN_ENTRIES]) + (f", … ({more} more)" if more > 0 else "")


def _summary(d: Path) -> str:
    """'an empty directory' or 'N entries: a/, b, c, … (k more)', with a hint for unextracted archives."""
    if not d.is_dir():
        return "no such directory"
    try:
        entries = [p for p in d.iterdir() if not p.name.startswith(".")]
    except OSError as e:
        return f"an unreadable directory ({e.strerror})"
    if not entries:
        return "an empty directory"
    text = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: {_names(entries)}"
    if any(p.name.endswith(_ARCHIVES) for p in entries):
        text += " (archives not extracted?)"
    return text
