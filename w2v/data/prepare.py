"""Corpus → validated lhotse manifests, with every bad file reported and the rest kept.

``prepare_librispeech`` / ``prepare_aishell`` read the real corpora's layouts (and the synthetic ones
made by :mod:`w2v.data.synth`). Utterances are parsed with lhotse's own recipe code; before that,
each transcript line and audio file is checked so that one bad file costs one utterance, not the
run: a corrupt or truncated file, a wrong sample rate or channel count, an empty or non-UTF-8
transcript line. Rejections go to ``<output_dir>/rejected_<prefix>_<part>.txt`` (path, reason) and
to the log. A part directory that is missing is reported after the other parts are written.
Manifests are written under temporary names and renamed, so an interrupted run leaves none half
written and a rerun skips the parts already done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.qa import fix_manifests, validate_recordings_and_supervisions
from lhotse.recipes.aishell import text_normalize as aishell_text_normalize
from lhotse.recipes.librispeech import parse_utterance as parse_librispeech_utterance

SAMPLE_RATE = 16000
LIBRISPEECH_PARTS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
    "train-clean-5", "dev-clean-2",  # mini_librispeech
)
AISHELL_PARTS = ("train", "dev", "test")
AISHELL_TRANSCRIPT = "data_aishell/transcript/aishell_transcript_v0.8.txt"


class MissingPartError(FileNotFoundError):
    """Some requested parts have no directory; the others were prepared."""


@dataclass
class PartResult:
    part: str
    recordings: RecordingSet | None = None
    supervisions: SupervisionSet | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)
    cached: bool = False


def check_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> str | None:
    """Return why ``path`` is unusable as a mono ``sample_rate`` recording, or None if it is fine.

    Reads the header and the last few thousand samples: a file cut short fails the tail read
    even though its header still announces the full length.
    """
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises several types
        return f"unreadable audio ({e})"
    if info.frames <= 0:
        return "empty audio (0 samples)"
    if info.samplerate != sample_rate:
        return f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz"
    if info.channels != 1:
        return f"{info.channels} channels, expected 1 (mono)"
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(max(0, info.frames - 4096))
            tail = f.read(dtype="int16")
        if len(tail) < min(4096, info.frames):
            return f"truncated: header says {info.frames} samples, the end cannot be read"
    except Exception as e:
        return f"truncated or corrupt audio ({e})"
    return None


def _manifest_paths(output_dir: Path, prefix: str, part: str) -> tuple[Path, Path]:
    return (
        output_dir / f"{prefix}_recordings_{part}.jsonl.gz",
        output_dir / f"{prefix}_supervisions_{part}.jsonl.gz",
    )


def _write_manifests(result: PartResult, output_dir: Path, prefix: str) -> None:
    rec_path, sup_path = _manifest_paths(output_dir, prefix, result.part)
    report = output_dir / f"rejected_{prefix}_{result.part}.txt"
    lines = [f"{p}\t{why}" for p, why in result.rejected]
    tmp_report = report.with_name(f".{report.name}.partial")
    tmp_report.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp_report, report)
    # lhotse picks the format from the extension, so the temporary name keeps ".jsonl.gz".
    for manifest, path in ((result.recordings, rec_path), (result.supervisions, sup_path)):
        tmp = path.with_name(f".partial.{path.name}")
        manifest.to_file(tmp)
        os.replace(tmp, path)


def _read_cached(output_dir: Path, prefix: str, part: str) -> PartResult | None:
    rec_path, sup_path = _manifest_paths(output_dir, prefix, part)
    if rec_path.is_file() and sup_path.is_file():
        return PartResult(
            part,
            RecordingSet.from_file(rec_path),
            SupervisionSet.from_file(sup_path),
            cached=True,
        )
    return None


def _decode_lines(path: Path, rejected: list[tuple[str, str]]) -> list[str]:
    """Transcript lines that decode as UTF-8 and carry text; the others are rejected by line."""
    good = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            rejected.append((f"{path}:{n}", f"transcript line is not UTF-8 ({e.reason} at byte {e.start})"))
            continue
        if not line:
            continue
        fields = line.split(maxsplit=1)
        if len(fields) < 2 or not fields[1].strip():
            rejected.append((f"{path}:{n}", f"empty transcript for {fields[0]}"))
            continue
        good.append(line)
    return good


def _finish(result: PartResult, recordings: list[Recording], segments: list[SupervisionSegment]) -> PartResult:
    if not recordings:
        raise ValueError(f"part '{result.part}' has no usable utterance ({len(result.rejected)} rejected)")
    recs, sups = fix_manifests(RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(segments))
    validate_recordings_and_supervisions(recs, sups)
    result.recordings, result.supervisions = recs, sups
    return result


def _log_rejections(result: PartResult) -> None:
    for path, why in result.rejected:
        logging.warning(f"rejected {path}: {why}")
    if result.rejected:
        logging.warning(f"{result.part}: {len(result.rejected)} utterance(s) rejected (see rejected_*_{result.part}.txt)")


def _librispeech_part(part_dir: Path, nj: int) -> PartResult:
    result = PartResult(part_dir.name)
    lines: list[str] = []
    for trans in sorted(part_dir.rglob("*.trans.txt")):
        lines.extend(_decode_lines(trans, result.rejected))

    def audio_of(line: str) -> Path:
        uid = line.split(maxsplit=1)[0]
        return part_dir / Path(uid.replace("-", "/")).parent / f"{uid}.flac"

    def check(line: str) -> str | None:
        path = audio_of(line)
        return "no audio file for this transcript line" if not path.is_file() else check_audio(path)

    with ThreadPoolExecutor(max(1, nj)) as ex:
        problems = list(ex.map(check, lines))
        ok = [line for line, why in zip(lines, problems) if why is None]
        result.rejected += [(str(audio_of(line)), why) for line, why in zip(lines, problems) if why]
        parsed = list(ex.map(lambda line: parse_librispeech_utterance(part_dir, line, {}), ok))
    parsed = [p for p in parsed if p is not None]
    return _finish(result, [r for r, _ in parsed], [s for _, s in parsed])


def prepare_librispeech(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] = ("train-clean-100", "dev-clean", "test-clean"),
    nj: int = 2,
) -> dict[str, PartResult]:
    """Manifests ``librispeech_{recordings,supervisions}_<part>.jsonl.gz`` for each part.

    Args:
      corpus_dir: the ``LibriSpeech`` directory (holding ``train-clean-100/`` etc.).
      output_dir: where manifests and rejection reports go.
      parts: LibriSpeech part names.
      nj: threads for checking and reading audio headers.
    Raises:
      FileNotFoundError: ``corpus_dir`` does not exist.
      MissingPartError: after preparing the others, when some parts have no directory.
    """
    return _prepare(corpus_dir, output_dir, parts, "librispeech", nj)


def prepare_aishell(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] = AISHELL_PARTS,
    nj: int = 2,
) -> dict[str, PartResult]:
    """Manifests ``aishell_{recordings,supervisions}_<part>.jsonl.gz`` for each part.

    ``corpus_dir`` holds ``data_aishell/``. As in lhotse, supervision text has the spaces between
    words removed (characters are the modelling unit); the transcript's word segmentation is kept
    in ``supervision.custom["words"]`` for word-level lexicons and LMs.
    """
    return _prepare(corpus_dir, output_dir, parts, "aishell", nj)


def _prepare(corpus_dir, output_dir, parts, prefix: str, nj: int) -> dict[str, PartResult]:
    corpus_dir, output_dir = Path(corpus_dir), Path(output_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus_dir} does not exist")
    output_dir.mkdir(parents=True, exist_ok=True)
    known = LIBRISPEECH_PARTS if prefix == "librispeech" else AISHELL_PARTS
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ValueError(f"unknown {prefix} part(s) {unknown}; expected some of {list(known)}")
    transcripts = None
    results, missing = {}, []
    for part in parts:
        cached = _read_cached(output_dir, prefix, part)
        if cached is not None:
            logging.info(f"{prefix} {part}: manifests already in {output_dir}, skipping")
            results[part] = cached
            continue
        if prefix == "librispeech":
            part_dir = corpus_dir / part
        else:
            part_dir = corpus_dir / "data_aishell" / "wav" / part
        if not part_dir.is_dir():
            logging.error(f"{prefix} part '{part}': directory {part_dir} does not exist")
            missing.append(str(part_dir))
            continue
        if prefix == "librispeech":
            result = _librispeech_part(part_dir, nj)
        else:
            if transcripts is None:
                transcripts = _aishell_transcripts(corpus_dir)
            result = _aishell_part(part_dir, transcripts, nj)
        _log_rejections(result)
        _write_manifests(result, output_dir, prefix)
        logging.info(
            f"{prefix} {part}: {len(result.recordings)} utterances, "
            f"{sum(r.duration for r in result.recordings) / 3600:.2f} h"
        )
        results[part] = result
    if missing:
        raise MissingPartError(f"missing part directories: {', '.join(missing)} (the other parts were prepared)")
    return results


def _aishell_transcripts(corpus_dir: Path) -> dict[str, tuple[str, str] | str]:
    """utt id → (words joined by spaces, normalised text without spaces), or → reason if rejected."""
    path = corpus_dir / AISHELL_TRANSCRIPT
    if not path.is_file():
        raise FileNotFoundError(f"AISHELL transcript {path} does not exist")
    out: dict[str, tuple[str, str] | str] = {}
    rejected: list[tuple[str, str]] = []
    for line in _decode_lines(path, rejected):
        uid, words = line.split(maxsplit=1)
        words = " ".join(words.split())
        out[uid] = (words, aishell_text_normalize(words).replace(" ", ""))
    for where, why in rejected:
        uid = why.rsplit(" ", 1)[-1] if why.startswith("empty transcript") else where
        out[uid] = f"{why} ({where})"
    return out


def _aishell_part(part_dir: Path, transcripts: dict, nj: int) -> PartResult:
    result = PartResult(part_dir.name)
    wavs = sorted(part_dir.rglob("*.wav"))

    def check(path: Path) -> str | None:
        entry = transcripts.get(path.stem)
        if entry is None:
            return "no transcript line for this file"
        if isinstance(entry, str):
            return entry
        return check_audio(path)

    with ThreadPoolExecutor(max(1, nj)) as ex:
        problems = list(ex.map(check, wavs))
    recordings, segments = [], []
    for path, why in zip(wavs, problems):
        if why:
            result.rejected.append((str(path), why))
            continue
        rec = Recording.from_file(path)
        words, text = transcripts[path.stem]
        recordings.append(rec)
        segments.append(
            SupervisionSegment(
                id=path.stem, recording_id=rec.id, start=0.0, duration=rec.duration, channel=0,
                language="Chinese", speaker=path.parent.name, text=text, custom={"words": words},
            )
        )
    return _finish(result, recordings, segments)
