"""wenet's data interchange: a wenet data directory read as a corpus, and manifests written as one.

wenet (``examples/aishell/s0``) keeps one directory per part, ``data/{train,dev,test}``, with
  ``wav.scp``    ``utt_id /path/to/utt.wav``  (one audio file per utterance)
  ``text``       ``utt_id transcript``
  ``data.list``  one JSON object per line, ``{"key": utt_id, "wav": path, "txt": transcript}``
and ``units.txt`` (its ``lang_char.txt``): ``<blank> 0``, ``<unk> 1``, the units, ``<sos/eos>`` last.

Reading (:func:`prepare_wenet`) makes the same manifests as :func:`w2v.data.prepare.prepare_aishell`
(``aishell_{recordings,supervisions}_<part>.jsonl.gz``, ``rejected_aishell_<part>.txt``), with the
same audio checks and the same AISHELL text normalisation. A part is read from ``wav.scp`` +
``text`` when it has both, else from ``data.list``. Audio paths are absolute, or relative to the
part directory (the one holding ``wav.scp``); a Kaldi command (``... |``) is rejected. The
speaker is ``utt2spk``'s when the part has one, else the name of the directory holding the audio
file (AISHELL's ``S0002``). A transcript with spaces is word-segmented: its words go to
``supervision.custom["words"]`` as AISHELL's do; one without spaces (wenet's own AISHELL text) has
its characters as words (each CJK character alone, other runs whole).

Writing (:func:`export_wenet`, :func:`wenet_units`) goes the other way; ids, audio files and
transcripts survive the round trip.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

from w2v.data.layout import (
    AISHELL_PARTS,
    check_layout,
    wenet_part_problem,
)
from w2v.data.prepare import (
    PartResult,
    _finish,
    _read_cached,
    check_audio,
    raise_missing,
    store_part,
)
from w2v.data.text import mandarin_text, mandarin_units, normalize_mandarin
from w2v.lang.symbols import BLANK as OUR_BLANK, is_disambig
from w2v.utils import atomic_write_text

PREFIX = "aishell"
# wenet's special units and ours (w2v.lang: <blk> 0, <sos/eos> 1, <unk> 2 in both BPE and char dirs)
WENET_BLANK, WENET_UNK, WENET_SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
OUR_UNK, OUR_SOS_EOS = "<unk>", "<sos/eos>"


@dataclass(frozen=True)
class Utterance:
    """One wenet entry: ``key``, the audio file, the transcript as written, the speaker (or None)."""

    key: str
    wav: Path
    txt: str
    speaker: str | None = None


# ----------------------------------------------------------------------------------- reading


def _read_map(
    path: Path, rejected: list[tuple[str, str]], what: str
) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """Kaldi ``key value`` lines → ({key: (value, line number)}, keys of the lines rejected).

    A line whose value is missing or not UTF-8 is rejected with its key (the key read as far as it
    decodes); a repeated key keeps its first line.
    """
    out: dict[str, tuple[str, int]] = {}
    bad: set[str] = set()
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        fields = raw.strip().split(maxsplit=1)
        if not fields:
            continue
        key = fields[0].decode("utf-8", errors="replace")
        where = f"{path}:{n}"
        try:
            value = fields[1].decode("utf-8").strip() if len(fields) > 1 else ""
        except UnicodeDecodeError as e:
            rejected.append((where, f"{what} of {key} is not UTF-8 ({e.reason} at byte {e.start})"))
            bad.add(key)
            continue
        if not value:
            rejected.append((where, f"empty {what} for {key}"))
            bad.add(key)
        elif key in out:
            rejected.append((where, f"{key} repeated (first at line {out[key][1]}); this line is ignored"))
        else:
            out[key] = (value, n)
    return out, bad - out.keys()


def _read_data_list(path: Path, rejected: list[tuple[str, str]]) -> dict[str, tuple[str, str, int]]:
    """data.list → {key: (wav, txt, line number)}; a line that is not such a JSON object is rejected."""
    out: dict[str, tuple[str, str, int]] = {}
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            rejected.append((where, f"not a JSON object ({e})"))
            continue
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("key", "wav", "txt")):
            rejected.append((where, 'expected {"key": ..., "wav": ..., "txt": ...} with string values'))
            continue
        key = obj["key"]
        if not obj["txt"].strip():
            rejected.append((where, f"empty transcript for {key}"))
        elif key in out:
            rejected.append((where, f"{key} repeated (first at line {out[key][2]}); this line is ignored"))
        else:
            out[key] = (obj["wav"].strip(), obj["txt"].strip(), n)
    return out


def read_wenet_part(part_dir: str | Path, rejected: list[tuple[str, str]] | None = None) -> list[Utterance]:
    """The utterances of a wenet part directory, sorted by key.

    Args:
      part_dir: holds ``wav.scp`` + ``text`` (read when both are there) or ``data.list``;
        ``utt2spk`` optional.
      rejected: gets ``(where, reason)`` for every entry left out: unreadable or empty lines,
        repeated keys, an audio path without a transcript or the reverse, a Kaldi command.
    Returns:
      Utterances with absolute audio paths (not yet checked to exist).
    Raises:
      FileNotFoundError: the directory lacks those files (the message names them).
    """
    part_dir = Path(part_dir)
    rejected = [] if rejected is None else rejected
    problem = wenet_part_problem(part_dir)
    if problem:
        raise FileNotFoundError(f"wenet part directory {part_dir} {problem}")
    scp, text = part_dir / "wav.scp", part_dir / "text"
    if scp.is_file() and text.is_file():
        wavs, bad_wavs = _read_map(scp, rejected, "audio path")
        txts, bad_txts = _read_map(text, rejected, "transcript")
        # an entry whose line in the other file was rejected above is not reported twice
        for key in sorted(txts.keys() - wavs.keys() - bad_wavs):
            rejected.append((f"{text}:{txts[key][1]}", f"no wav.scp entry for {key}"))
        pairs = {}
        for key, (wav, n) in wavs.items():
            if key not in txts:
                if key not in bad_txts:
                    rejected.append((f"{scp}:{n}", f"no transcript line in {text.name} for {key}"))
            else:
                pairs[key] = (wav, txts[key][0], f"{scp}:{n}")
    else:
        dl = part_dir / "data.list"
        pairs = {key: (wav, txt, f"{dl}:{n}") for key, (wav, txt, n) in _read_data_list(dl, rejected).items()}
    speakers = {}
    if (part_dir / "utt2spk").is_file():
        speakers = {k: v.split()[0] for k, (v, _) in _read_map(part_dir / "utt2spk", [], "speaker")[0].items()}
    out = []
    for key in sorted(pairs):
        wav, txt, where = pairs[key]
        if wav.endswith("|"):
            rejected.append((where, f"{key}: a command ('... |'), not an audio file: give one file per utterance"))
            continue
        path = Path(wav) if os.path.isabs(wav) else part_dir / wav
        out.append(Utterance(key, Path(os.path.abspath(path)), txt, speakers.get(key)))
    return out


def transcript(txt: str) -> tuple[str, str]:
    """A wenet transcript → (words, text) as AISHELL preparation keeps them.

    Both in the one Mandarin normal form (:mod:`w2v.data.text`). ``text``: without word spaces
    (kept between Latin runs); ``words``: the transcript's segmentation when it has one, else its
    units (``"好的OK吗"`` → ``"好 的 OK 吗"``).
    """
    words = normalize_mandarin(txt)
    if " " not in " ".join(txt.split()):
        words = " ".join(mandarin_units(words))
    return words, mandarin_text(words)


def _wenet_part(part_dir: Path, nj: int, resample: bool = False) -> PartResult:
    result = PartResult(part_dir.name)
    utts = read_wenet_part(part_dir, result.rejected)

    def check(utt: Utterance) -> str | None:
        if not utt.wav.is_file():
            return f"no such audio file (for {utt.key}; relative wav.scp paths are read from {part_dir})"
        return check_audio(utt.wav, any_rate=resample)

    with ThreadPoolExecutor(max(1, nj)) as ex:
        problems = list(ex.map(check, utts))
    recordings, segments = [], []
    for utt, why in zip(utts, problems):
        if why:
            result.rejected.append((str(utt.wav), why))
            continue
        words, text = transcript(utt.txt)
        if not text:
            result.rejected.append((str(utt.wav), f"empty transcript for {utt.key} after normalisation"))
            continue
        rec = Recording.from_file(utt.wav, recording_id=utt.key)
        recordings.append(rec)
        segments.append(
            SupervisionSegment(
                id=utt.key, recording_id=utt.key, start=0.0, duration=rec.duration, channel=0,
                language="Chinese", speaker=utt.speaker or utt.wav.parent.name, text=text,
                custom={"words": words},
            )
        )
    return _finish(result, recordings, segments, "" if utts else f"no utterance in {part_dir}")


def prepare_wenet(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] = AISHELL_PARTS,
    nj: int = 2,
    resample: bool = False,
) -> dict[str, PartResult]:
    """Manifests ``aishell_{recordings,supervisions}_<part>.jsonl.gz`` from a wenet data directory.

    Args:
      corpus_dir: holds one directory per part (wenet's ``data/``: ``train/``, ``dev/``, ``test/``).
      output_dir, parts, nj, resample: as :func:`w2v.data.prepare.prepare_aishell`; parts already
        prepared in ``output_dir`` are skipped.
    Raises:
      FileNotFoundError: ``corpus_dir`` does not exist.
      ValueError: an unknown part name, ``corpus_dir`` not a wenet data directory (``LayoutError``),
        or a part without one usable utterance.
      MissingPartError: after preparing the others, when a part directory is missing or lacks
        wav.scp / text (named in the message).
    """
    corpus_dir, output_dir = Path(corpus_dir), Path(output_dir)
    check_layout(PREFIX, corpus_dir, parts, missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    results, missing = {}, []
    for part in parts:
        cached = _read_cached(output_dir, PREFIX, part)
        if cached is not None:
            logging.info(f"{PREFIX} {part}: manifests already in {output_dir}, skipping")
            results[part] = cached
            continue
        part_dir = corpus_dir / part
        problem = wenet_part_problem(part_dir)
        if problem:
            logging.error(f"{PREFIX} part '{part}': wenet part directory {part_dir} {problem}")
            missing.append(part_dir)
            continue
        results[part] = store_part(_wenet_part(part_dir, nj, resample), output_dir, PREFIX,
                                   f"{part} (wenet {part_dir})")
    raise_missing(PREFIX, corpus_dir, missing, prepared=bool(results))
    return results


# ----------------------------------------------------------------------------------- writing


def _audio_file(rec: Recording) -> Path:
    if len(rec.sources) != 1 or rec.sources[0].type != "file":
        kinds = [s.type for s in rec.sources]
        raise ValueError(f"recording {rec.id}: wenet needs one audio file, it has sources {kinds}")
    return Path(os.path.abspath(rec.sources[0].source))


def export_wenet(
    recordings: RecordingSet, supervisions: SupervisionSet, out_dir: str | Path, words: bool = False
) -> dict[str, Path]:
    """Write one wenet part: ``data.list``, ``wav.scp``, ``text`` and ``utt2spk``, keyed by supervision id.

    Args:
      recordings, supervisions: one supervision spanning each recording (as every part prepared
        here has); audio paths are written absolute.
      out_dir: the part directory (created).
      words: write ``custom["words"]`` (the word segmentation, spaces between words) instead of the
        normalised text without spaces (wenet's AISHELL convention, the default).
    Returns:
      name → path of every file written (each written atomically).
    Raises:
      ValueError: a supervision that is not its whole recording, or a recording not in one file.
    """
    out_dir = Path(out_dir)
    by_id = {rec.id: rec for rec in recordings}
    rows = []
    for sup in sorted(supervisions, key=lambda s: s.id):
        rec = by_id.get(sup.recording_id)
        if rec is None:
            raise ValueError(f"supervision {sup.id}: no recording {sup.recording_id}")
        if sup.start > 1e-3 or abs(sup.duration - rec.duration) > 1e-3:
            raise ValueError(
                f"supervision {sup.id} covers {sup.start:.3f}-{sup.end:.3f} s of {rec.duration:.3f} s: "
                "wenet's wav.scp holds one whole file per utterance"
            )
        txt = (sup.custom or {}).get("words", sup.text) if words else sup.text
        txt = " ".join(txt.split())
        if any(ch in sup.id for ch in " \t\n"):
            raise ValueError(f"supervision id {sup.id!r} has white space: not a wenet key")
        rows.append((sup.id, _audio_file(rec), txt, sup.speaker))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: out_dir / name for name in ("data.list", "wav.scp", "text", "utt2spk")}
    atomic_write_text(
        files["data.list"],
        "".join(json.dumps({"key": k, "wav": str(w), "txt": t}, ensure_ascii=False) + "\n" for k, w, t, _ in rows),
    )
    atomic_write_text(files["wav.scp"], "".join(f"{k} {w}\n" for k, w, _, _ in rows))
    atomic_write_text(files["text"], "".join(f"{k} {t}\n" for k, _, t, _ in rows))
    atomic_write_text(files["utt2spk"], "".join(f"{k} {s or k}\n" for k, _, _, s in rows))
    return files


def wenet_units(tokens: Mapping[str, int]) -> tuple[list[str], dict[int, int]]:
    """Our tokens.txt → wenet's units.txt, and the id map between them.

    Ours (``w2v.lang``): ``<blk> 0``, ``<sos/eos> 1``, ``<unk> 2``, units 3..N-1, then ``#0``, ``#1``...
    wenet: ``<blank> 0``, ``<unk> 1``, the same units in the same order from 2, ``<sos/eos>`` last.
    So ``<blk>`` 0 → 0, ``<unk>`` 2 → 1, unit i → i - 1, ``<sos/eos>`` 1 → N - 1; disambiguation
    symbols (``#<digits>``, used only by the decoding graphs) are dropped.

    Args:
      tokens: symbol → id as read from tokens.txt (``w2v.lang.symbols.read_tokens``).
    Returns:
      (wenet's symbols, in id order; our id → wenet id for every symbol kept).
    Raises:
      ValueError: ``<blk>`` not 0, ``<unk>`` missing, or a unit spelled like one of wenet's specials.
    """
    if tokens.get(OUR_BLANK) != 0:
        raise ValueError(f"tokens: '{OUR_BLANK}' must have id 0, got {tokens.get(OUR_BLANK)}")
    if OUR_UNK not in tokens:
        raise ValueError(f"tokens: no '{OUR_UNK}' (wenet's id 1)")
    specials = {OUR_BLANK, OUR_UNK, OUR_SOS_EOS}
    units = [s for s, _ in sorted(tokens.items(), key=lambda kv: kv[1])
             if s not in specials and not is_disambig(s)]
    clash = [u for u in units if u in (WENET_BLANK, WENET_UNK, WENET_SOS_EOS)]
    if clash:
        raise ValueError(f"tokens: units {clash} are spelled like wenet's special symbols")
    symbols = [WENET_BLANK, WENET_UNK, *units, WENET_SOS_EOS]
    ours = [OUR_BLANK, OUR_UNK, *units, OUR_SOS_EOS]
    mapping = {tokens[o]: i for i, o in enumerate(ours) if o in tokens}
    return symbols, mapping


def write_units(path: str | Path, tokens: Mapping[str, int]) -> dict[int, int]:
    """Write wenet's ``units.txt`` (``symbol id`` lines) for ``tokens``; returns our id → wenet id."""
    symbols, mapping = wenet_units(tokens)
    atomic_write_text(path, "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))
    return mapping


__all__ = [
    "Utterance", "export_wenet", "prepare_wenet", "read_wenet_part", "transcript", "wenet_units", "write_units",
]
