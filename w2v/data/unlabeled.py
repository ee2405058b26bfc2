"""Directories of untranscribed audio → lhotse recordings and cuts for self-supervised pretraining.

The few-labels setting of wav2vec 2.0: a little transcribed speech (prepared by
:mod:`w2v.data.prepare`) and much audio without transcripts, from any directory tree. Every file
with an extension in :data:`AUDIO_EXTENSIONS` (what soundfile reads; ``.mp3`` needs libsndfile
1.1 or newer, else such files are rejected as unreadable) is one Recording, checked as prepare.py
checks a corpus (:func:`w2v.data.prepare.check_audio`): a corrupt or truncated file, another
channel count, or another sample rate without ``resample`` is rejected with its reason and the
rest are kept. With ``resample`` a file at another rate resamples to 16 kHz on load (lhotse's
``Recording.resample``, as prepare.py does).

Recording ids are the file's path relative to its directory, without the extension, ``/`` and
whitespace turned into ``_``; with several directories each id starts with the directory's index
(``0_``, ``1_``, ...), so equal relative paths in two directories do not collide. Two files of one
directory that still map to one id (``a/b.wav`` and ``a_b.flac``) keep the first in sorted order;
the other is rejected, naming it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lhotse import CutSet, Recording, RecordingSet
from lhotse.cut import Cut
from lhotse.qa import validate

from w2v.data.prepare import check_audio
from w2v.runtime import SAMPLE_RATE
from w2v.utils import atomic_path, atomic_write_text

AUDIO_EXTENSIONS = (".flac", ".mp3", ".ogg", ".wav")
MANIFEST = "unlabeled_recordings.jsonl.gz"
REJECTED = "rejected_unlabeled.txt"
# Pretraining loads a whole cut before cropping it; windows bound what one cut costs.
MAX_CUT_SECONDS = 30.0


def scan_audio(
    dirs: Sequence[str | Path], nj: int = 2, resample: bool = False
) -> tuple[RecordingSet, list[tuple[str, str]]]:
    """Every audio file under ``dirs`` (recursively) as a Recording; the bad ones as (path, reason).

    Args:
      dirs: directories of audio files, any depth; no transcripts are read.
      nj: threads for checking files and reading their headers.
      resample: keep files at other sample rates, resampled to 16 kHz on load (default: reject).
    Returns:
      (recordings in sorted path order, validated; rejected files as (path, reason)).
    Raises:
      FileNotFoundError: a directory does not exist.
      ValueError: no directory given, a directory without any audio file, or no usable file at all.
    """
    files = _audio_files([Path(d) for d in dirs])
    with ThreadPoolExecutor(max(1, nj)) as ex:
        problems = list(ex.map(lambda f: check_audio(f[0], any_rate=resample), files))
        rejected = [(str(path), why) for (path, _), why in zip(files, problems) if why]
        good, taken = _unique_ids([f for f, why in zip(files, problems) if why is None])
        rejected += taken
        read = list(ex.map(lambda f: _recording(*f), good))
    rejected += [(str(path), r) for (path, _), r in zip(good, read) if isinstance(r, str)]
    recordings, resampled = _resampled([r for r in read if isinstance(r, Recording)])
    _log(rejected, resampled)
    if not recordings:
        raise ValueError(f"no usable audio file under {[str(d) for d in dirs]}: all {len(rejected)} rejected")
    recordings = RecordingSet.from_recordings(recordings)
    validate(recordings)
    return recordings, rejected


def prepare_unlabeled(
    dirs: Sequence[str | Path], output_dir: str | Path, nj: int = 2, resample: bool = False
) -> Path:
    """Write ``output_dir/unlabeled_recordings.jsonl.gz`` and ``rejected_unlabeled.txt``
    (``path<TAB>reason`` lines) for the audio under ``dirs``; returns the manifest's path.

    Both are written under temporary names and renamed, the manifest last. Arguments and errors
    as :func:`scan_audio`.
    """
    recordings, rejected = scan_audio(dirs, nj, resample)
    output_dir = Path(output_dir)
    atomic_write_text(output_dir / REJECTED, "".join(f"{path}\t{why}\n" for path, why in rejected))
    manifest = output_dir / MANIFEST
    with atomic_path(manifest, suffix=".tmp.jsonl.gz") as tmp:  # lhotse picks the format from the name
        recordings.to_file(tmp)
    logging.info(
        f"unlabeled: {len(recordings)} recordings, {sum(r.duration for r in recordings) / 3600:.2f} h "
        f"({len(rejected)} rejected) → {manifest}"
    )
    return manifest


def unlabeled_cuts(recordings: RecordingSet, max_seconds: float = MAX_CUT_SECONDS) -> CutSet:
    """Cuts without supervisions over ``recordings``, for ``w2v.bin.pretrain --cuts``.

    A recording no longer than ``max_seconds`` is one cut with the recording's id (lhotse's own
    ids carry the recording's position in the set, which shifts when a file is added); a longer one
    is split into equal windows of at most that length, ids ``<recording id>-w<k>``: pretraining
    loads a whole cut before cropping it, so an hour-long file would be read in full for every few
    seconds it trains on. Works on any part's recordings, transcribed or not.
    """
    cuts = CutSet.from_manifests(recordings=recordings)
    return CutSet.from_cuts(w for cut in cuts for w in _windows(cut, max_seconds))


def _audio_files(dirs: list[Path]) -> list[tuple[Path, str]]:
    """(path, recording id) of every audio file under ``dirs``, sorted per directory."""
    if not dirs:
        raise ValueError("no directory of unlabelled audio given")
    files = []
    for i, root in enumerate(dirs):
        if not root.is_dir():
            raise FileNotFoundError(f"unlabelled audio directory {root} does not exist (or is not a directory)")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not paths:
            raise ValueError(f"no audio file ({' '.join(AUDIO_EXTENSIONS)}) under {root}")
        prefix = f"{i}_" if len(dirs) > 1 else ""
        files += [(p, prefix + _id_of(p.relative_to(root))) for p in paths]
    return files


def _id_of(relative: Path) -> str:
    return re.sub(r"[/\s]", "_", relative.with_suffix("").as_posix())


def _unique_ids(files: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """The files whose id is still free, and (path, reason) for those whose id an earlier file took."""
    first: dict[str, Path] = {}
    kept, taken = [], []
    for path, rid in files:
        if rid in first:
            taken.append((str(path), f"recording id '{rid}' already taken by {first[rid]}"))
        else:
            first[rid] = path
            kept.append((path, rid))
    return kept, taken


def _recording(path: Path, rid: str) -> Recording | str:
    """The Recording of ``path``, or why lhotse cannot read a file soundfile accepted."""
    try:
        return Recording.from_file(path, recording_id=rid)
    except Exception as e:  # lhotse's audio backends raise several types
        return f"lhotse cannot read it ({e})"


def _resampled(recordings: list[Recording]) -> tuple[list[Recording], dict[int, int]]:
    """Recordings at other rates resample on load; returns them and how many came from each rate."""
    counts: Counter[int] = Counter(r.sampling_rate for r in recordings if r.sampling_rate != SAMPLE_RATE)
    out = [r if r.sampling_rate == SAMPLE_RATE else r.resample(SAMPLE_RATE) for r in recordings]
    return out, dict(sorted(counts.items()))


def _log(rejected: list[tuple[str, str]], resampled: dict[int, int]) -> None:
    for path, why in rejected:
        logging.warning(f"rejected {path}: {why}")
    if rejected:
        logging.warning(f"unlabeled: {len(rejected)} file(s) rejected")
    if resampled:
        counts = ", ".join(f"{n} from {rate} Hz" for rate, n in resampled.items())
        logging.info(f"unlabeled: resampled {counts} (to {SAMPLE_RATE} Hz, on load)")


def _windows(cut: Cut, max_seconds: float) -> list[Cut]:
    n = math.ceil(cut.duration / max_seconds)
    if n <= 1:
        return [cut.with_id(cut.recording_id)]
    # boundaries on whole samples, so the windows together hold every sample exactly once
    rate = cut.sampling_rate
    bounds = [round(k * cut.num_samples / n) for k in range(n + 1)]
    return [
        cut.truncate(offset=bounds[k] / rate, duration=(bounds[k + 1] - bounds[k]) / rate)
        .with_id(f"{cut.recording_id}-w{k}")
        for k in range(n)
    ]
