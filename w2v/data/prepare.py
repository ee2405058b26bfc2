"""Corpus → validated lhotse manifests, with every bad file reported and the rest kept.

``prepare_librispeech`` / ``prepare_aishell`` read the real corpora's layouts (and the synthetic ones
made by :mod:`w2v.data.synth`). Utterances are parsed with lhotse's own recipe code; before that,
each transcript line and audio file is checked so that one bad file costs one utterance, not the
run: a corrupt or truncated file, a wrong sample rate or channel count, an empty or non-UTF-8
transcript line. Rejections go to ``<output_dir>/rejected_<prefix>_<part>.txt`` (path, reason) and
to the log. A file at another sample rate is rejected too, unless ``resample=True``: then its
Recording resamples to 16 kHz on load (lhotse's ``Recording.resample``) and the log counts such
files per rate. Multi-channel files stay rejected either way (they are not downmixed).
A corpus directory in the wrong layout fails first, with one message (:mod:`w2v.data.layout`); a
part directory that is missing is reported after the other parts are written.
Manifests are written under temporary names and renamed, so an interrupted run leaves none half
written and a rerun skips the parts already done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.qa import fix_manifests, validate_recordings_and_supervisions
from lhotse.recipes.librispeech import parse_utterance as parse_librispeech_utterance

from w2v.data.layout import (  # noqa: F401  (part lists and MissingPartError are imported from here too)
    AISHELL_PARTS,
    AISHELL_TRANSCRIPT,
    LIBRISPEECH_PARTS,
    MissingPartError,
    check_layout,
    missing_parts_message,
    part_dir as _part_dir,
)
from w2v.data.text import mandarin_text, normalize_mandarin
from w2v.runtime import SAMPLE_RATE

_RATE_REASON = "sample rate "


@dataclass
class PartResult:
    part: str
    recordings: RecordingSet | None = None
    supervisions: SupervisionSet | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)
    cached: bool = False
    resampled: dict[int, int] = field(default_factory=dict)  # original rate (Hz) → number of files


def check_audio(path: Path, sample_rate: int = SAMPLE_RATE, any_rate: bool = False) -> str | None:
    """Return why ``path`` is unusable as a mono ``sample_rate`` recording, or None if it is fine.

    Reads the header and the last few thousand samples: a file cut short fails the tail read
    even though its header still announces the full length. ``any_rate``: accept every sample
    rate (the caller resamples).
    """
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises several types
        return f"unreadable audio ({e})"
    if info.frames <= 0:
        return "empty audio (0 samples)"
    if info.samplerate != sample_rate and not any_rate:
        return f"{_RATE_REASON}{info.samplerate} Hz, expected {sample_rate} Hz"
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


def _to_16k(result: PartResult, recordings: list[Recording], segments: list[SupervisionSegment]):
    """Recordings at other rates resample on load; their (whole-file) supervisions follow the new duration."""
    by_id = {s.recording_id: i for i, s in enumerate(segments)}
    counts: Counter[int] = Counter()
    out = []
    for rec in recordings:
        if rec.sampling_rate != SAMPLE_RATE:
            counts[rec.sampling_rate] += 1
            rec = rec.resample(SAMPLE_RATE)
            i = by_id[rec.id]
            segments[i] = dataclasses.replace(segments[i], duration=min(segments[i].duration, rec.duration))
        out.append(rec)
    result.resampled = dict(sorted(counts.items()))
    return out, segments


def _finish(
    result: PartResult, recordings: list[Recording], segments: list[SupervisionSegment], why_empty: str = ""
) -> PartResult:
    if not recordings:
        why = why_empty or f"{len(result.rejected)} rejected"
        raise ValueError(f"part '{result.part}' has no usable utterance ({why})")
    recordings, segments = _to_16k(result, recordings, segments)
    recs, sups = fix_manifests(RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(segments))
    validate_recordings_and_supervisions(recs, sups)
    result.recordings, result.supervisions = recs, sups
    return result


def _log_checks(result: PartResult) -> None:
    """Each rejection, a count of those at another sample rate, and the files resampled per rate."""
    for path, why in result.rejected:
        logging.warning(f"rejected {path}: {why}")
    if result.rejected:
        logging.warning(f"{result.part}: {len(result.rejected)} utterance(s) rejected (see rejected_*_{result.part}.txt)")
    n_rate = sum(why.startswith(_RATE_REASON) for _, why in result.rejected)
    if n_rate:
        logging.warning(
            f"{result.part}: {n_rate} of them for their sample rate; "
            f"--resample true keeps them, resampled to {SAMPLE_RATE} Hz on load"
        )
    if result.resampled:
        counts = [f"{n} file{'s' if n != 1 else ''} from {rate} Hz" if i == 0 else f"{n} from {rate} Hz"
                  for i, (rate, n) in enumerate(result.resampled.items())]
        logging.info(f"{result.part}: resampled {', '.join(counts)} (to {SAMPLE_RATE} Hz, on load)")


def _librispeech_part(part_dir: Path, nj: int, resample: bool = False) -> PartResult:
    result = PartResult(part_dir.name)
    lines: list[str] = []
    transcripts = sorted(part_dir.rglob("*.trans.txt"))
    for trans in transcripts:
        lines.extend(_decode_lines(trans, result.rejected))

    def audio_of(line: str) -> Path:
        uid = line.split(maxsplit=1)[0]
        return part_dir / Path(uid.replace("-", "/")).parent / f"{uid}.flac"

    def check(line: str) -> str | None:
        path = audio_of(line)
        if not path.is_file():
            return "no audio file for this transcript line"
        return check_audio(path, any_rate=resample)

    with ThreadPoolExecutor(max(1, nj)) as ex:
        problems = list(ex.map(check, lines))
        ok = [line for line, why in zip(lines, problems) if why is None]
        result.rejected += [(str(audio_of(line)), why) for line, why in zip(lines, problems) if why]
        parsed = list(ex.map(lambda line: parse_librispeech_utterance(part_dir, line, {}), ok))
    parsed = [p for p in parsed if p is not None]
    why_empty = ""
    if not transcripts:
        n_flac = sum(1 for _ in part_dir.rglob("*.flac"))
        why_empty = f"no <speaker>-<chapter>.trans.txt under {part_dir}; found {n_flac} .flac file(s)"
    return _finish(result, [r for r, _ in parsed], [s for _, s in parsed], why_empty)


def prepare_librispeech(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] = ("train-clean-100", "dev-clean", "test-clean"),
    nj: int = 2,
    resample: bool = False,
) -> dict[str, PartResult]:
    """Manifests ``librispeech_{recordings,supervisions}_<part>.jsonl.gz`` for each part.

    Args:
      corpus_dir: the ``LibriSpeech`` directory (holding ``train-clean-100/`` etc.).
      output_dir: where manifests and rejection reports go.
      parts: LibriSpeech part names.
      nj: threads for checking and reading audio headers.
      resample: keep files at other sample rates, resampled to 16 kHz on load (default: reject).
    Raises:
      FileNotFoundError: ``corpus_dir`` does not exist.
      ValueError: an unknown part name (``UnknownPartError``), or ``corpus_dir`` is not in the
        LibriSpeech layout (``LayoutError``, saying what it is and, where it can, what to give).
      MissingPartError: after preparing the others, when some parts have no directory.
    """
    return _prepare(corpus_dir, output_dir, parts, "librispeech", nj, resample)


def prepare_aishell(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] = AISHELL_PARTS,
    nj: int = 2,
    resample: bool = False,
) -> dict[str, PartResult]:
    """Manifests ``aishell_{recordings,supervisions}_<part>.jsonl.gz`` for each part.

    ``corpus_dir`` holds ``data_aishell/``. Transcripts are normalised
    (:func:`w2v.data.text.normalize_mandarin`: half-width, upper-case Latin, no punctuation); the
    supervision text has the spaces between words removed (characters are the modelling unit),
    except between two Latin runs (:func:`w2v.data.text.mandarin_text`); the normalised word
    segmentation is kept in ``supervision.custom["words"]`` for word-level lexicons and LMs.
    A line with nothing left after normalisation is rejected. Arguments and errors as
    :func:`prepare_librispeech`.
    """
    return _prepare(corpus_dir, output_dir, parts, "aishell", nj, resample)


def _prepare(corpus_dir, output_dir, parts, prefix: str, nj: int, resample: bool) -> dict[str, PartResult]:
    corpus_dir, output_dir = Path(corpus_dir), Path(output_dir)
    check_layout(prefix, corpus_dir, parts, missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    transcripts = None
    results, missing = {}, []
    for part in parts:
        cached = _read_cached(output_dir, prefix, part)
        if cached is not None:
            logging.info(f"{prefix} {part}: manifests already in {output_dir}, skipping")
            results[part] = cached
            continue
        part_dir = _part_dir(prefix, corpus_dir, part)
        if not part_dir.is_dir():
            logging.error(f"{prefix} part '{part}': directory {part_dir} does not exist")
            missing.append(part_dir)
            continue
        if prefix == "librispeech":
            result = _librispeech_part(part_dir, nj, resample)
        else:
            if transcripts is None:
                transcripts = _aishell_transcripts(corpus_dir)
            result = _aishell_part(part_dir, transcripts, nj, resample)
        results[part] = store_part(result, output_dir, prefix, part)
    raise_missing(prefix, corpus_dir, missing, prepared=bool(results))
    return results


def store_part(result: PartResult, output_dir: Path, prefix: str, label: str) -> PartResult:
    """Log a prepared part's checks, write its manifests, log its size; returns it."""
    _log_checks(result)
    _write_manifests(result, output_dir, prefix)
    logging.info(f"{prefix} {label}: {len(result.recordings)} utterances, "
                 f"{sum(r.duration for r in result.recordings) / 3600:.2f} h")
    return result


def raise_missing(prefix: str, corpus_dir: Path, missing: list[Path], prepared: bool) -> None:
    """The parts that were not there, named in one error (after the others were prepared)."""
    if missing:
        note = "(the other parts were prepared)" if prepared else ""
        raise MissingPartError(missing_parts_message(prefix, corpus_dir, missing, note))


def _aishell_transcripts(corpus_dir: Path) -> dict[str, tuple[str, str] | str]:
    """utt id → (words joined by spaces, normalised text without spaces), or → reason if rejected."""
    path = corpus_dir / AISHELL_TRANSCRIPT
    if not path.is_file():
        raise FileNotFoundError(f"AISHELL transcript {path} does not exist")
    out: dict[str, tuple[str, str] | str] = {}
    rejected: list[tuple[str, str]] = []
    for line in _decode_lines(path, rejected):
        uid, raw = line.split(maxsplit=1)
        words = normalize_mandarin(raw)
        out[uid] = (words, mandarin_text(words)) if words else (
            f"empty transcript for {uid} after normalisation (was {raw!r}) ({path})")
    for where, why in rejected:
        uid = why.rsplit(" ", 1)[-1] if why.startswith("empty transcript") else where
        out[uid] = f"{why} ({where})"
    return out


def _aishell_part(part_dir: Path, transcripts: dict, nj: int, resample: bool = False) -> PartResult:
    result = PartResult(part_dir.name)
    wavs = sorted(part_dir.rglob("*.wav"))

    def check(path: Path) -> str | None:
        entry = transcripts.get(path.stem)
        if entry is None:
            return "no transcript line for this file"
        if isinstance(entry, str):
            return entry
        return check_audio(path, any_rate=resample)

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
    why_empty = "" if wavs else f"no .wav file under {part_dir}"
    return _finish(result, recordings, segments, why_empty)
