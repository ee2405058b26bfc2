"""80-dim log-mel filterbank features into lhotse feature storage (the fbank recipe stage).

Cuts are built from a part's recordings + supervisions, trimmed to the supervisions, optionally
speed-perturbed (0.9, 1.1; train parts), and their features stored with ``LilcomChunkyWriter``.
A cut whose audio cannot be loaded is reported (file and error) and dropped; the rest goes on.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, RecordingSet, SupervisionSet

from w2v.utils import atomic_path

log = logging.getLogger(__name__)

NUM_MEL_BINS = 80
SPEED_FACTORS = (0.9, 1.1)


@dataclass
class FailedCut:
    cut_id: str
    source: str
    error: str

    @classmethod
    def of(cls, cut, error: Exception) -> "FailedCut":
        """The cut, its audio file(s), and the first line of the error (lhotse's message lists
        every backend it tried; the first line names the cause)."""
        text = str(error).strip()
        return cls(cut.id, cut_source(cut), f"{type(error).__name__}: {text.splitlines()[0] if text else ''}")


def fbank_extractor(num_mel_bins: int = NUM_MEL_BINS) -> Fbank:
    """lhotse's Kaldi-compatible Fbank: 25 ms window, 10 ms shift, 16 kHz."""
    return Fbank(FbankConfig(num_mel_bins=num_mel_bins))


def manifest_paths(manifest_dir: str | Path, prefix: str, part: str) -> tuple[Path, Path]:
    d = Path(manifest_dir)
    return (
        d / f"{prefix}_recordings_{part}.jsonl.gz",
        d / f"{prefix}_supervisions_{part}.jsonl.gz",
    )


def save_cuts(cuts: CutSet, path: str | Path) -> None:
    """Write a ``.jsonl.gz`` cuts manifest under a temporary name, then rename it into place."""
    # lhotse picks the format from the suffix, so the temporary name keeps ".jsonl.gz".
    with atomic_path(path, suffix=".tmp.jsonl.gz") as tmp:
        cuts.to_file(tmp)


def cuts_path(out_dir: str | Path, prefix: str, part: str) -> Path:
    return Path(out_dir) / f"{prefix}_cuts_{part}.jsonl.gz"


def make_cuts(
    recordings: RecordingSet, supervisions: SupervisionSet, speed_perturb: bool = False
) -> CutSet:
    """One cut per supervision (trimmed); with ``speed_perturb`` also ×0.9 and ×1.1 copies
    (ids suffixed ``_sp0.9`` / ``_sp1.1``)."""
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
    if speed_perturb:
        cuts = cuts + sum(
            (cuts.perturb_speed(f).to_eager() for f in SPEED_FACTORS), start=CutSet()
        )
    return cuts.to_eager()


def cut_source(cut) -> str:
    try:
        return ", ".join(s.source for s in cut.recording.sources)
    except AttributeError:
        return "<unknown>"


def _compute_chunk(
    cuts: list, storage_path: str, num_mel_bins: int
) -> tuple[list, list[FailedCut]]:
    """Worker: features for ``cuts`` into one chunky archive; failing cuts are returned apart."""
    import torch

    torch.set_num_threads(1)
    extractor = fbank_extractor(num_mel_bins)
    done, failed = [], []
    with LilcomChunkyWriter(storage_path) as writer:
        for cut in cuts:
            try:
                done.append(cut.compute_and_store_features(extractor, writer))
            except Exception as e:  # any decoding/IO error of one file must not stop the part
                failed.append(FailedCut.of(cut, e))
    return done, failed


def compute_fbank(
    cuts: CutSet,
    storage_dir: str | Path,
    num_jobs: int = 1,
    num_mel_bins: int = NUM_MEL_BINS,
) -> tuple[CutSet, list[FailedCut]]:
    """Compute and store features for ``cuts`` in ``num_jobs`` processes.

    Returns:
        the cuts that succeeded, with features attached (input order), and the failures.
    """
    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    items = list(cuts)
    num_jobs = max(1, min(num_jobs, len(items)))
    chunks = [items[i::num_jobs] for i in range(num_jobs)]
    paths = [str(storage_dir / f"feats-{i}") for i in range(num_jobs)]
    if num_jobs == 1:
        results = [_compute_chunk(chunks[0], paths[0], num_mel_bins)]
    else:
        with ProcessPoolExecutor(num_jobs) as ex:
            results = list(ex.map(_compute_chunk, chunks, paths, [num_mel_bins] * num_jobs))
    by_id = {c.id: c for done, _ in results for c in done}
    failed = [f for _, fs in results for f in fs]
    for f in failed:
        log.warning("Dropping cut %s: cannot load %s: %s", f.cut_id, f.source, f.error)
    return CutSet.from_cuts(by_id[c.id] for c in items if c.id in by_id), failed


def compute_fbank_for_part(
    manifest_dir: str | Path,
    prefix: str,
    part: str,
    out_dir: str | Path,
    speed_perturb: bool = False,
    num_jobs: int = 1,
) -> Optional[Path]:
    """``out_dir/<prefix>_cuts_<part>.jsonl.gz`` (+ storage ``<prefix>_feats_<part>/``).

    Skips a part whose cuts manifest exists (returns None). The manifest is written under a
    temporary name and renamed, so an interrupted run leaves no manifest and is redone.
    """
    out = cuts_path(out_dir, prefix, part)
    if out.is_file():
        log.info("%s exists; skipping %s", out, part)
        return None
    rec_path, sup_path = manifest_paths(manifest_dir, prefix, part)
    for p in (rec_path, sup_path):
        if not p.is_file():
            raise FileNotFoundError(f"Missing manifest {p} (run the prepare stage first)")
    cuts = make_cuts(
        RecordingSet.from_file(rec_path), SupervisionSet.from_file(sup_path), speed_perturb
    )
    log.info("%s: computing fbank for %d cuts (speed perturb: %s)", part, len(cuts), speed_perturb)
    cuts, failed = compute_fbank(cuts, Path(out_dir) / f"{prefix}_feats_{part}", num_jobs)
    if failed:
        log.warning("%s: %d cuts dropped because their audio failed to load", part, len(failed))
    if len(cuts) == 0:
        raise RuntimeError(f"{part}: no cut could be processed ({len(failed)} failures)")
    save_cuts(cuts, out)
    log.info("%s: wrote %s (%d cuts)", part, out, len(cuts))
    return out


def compute_fbank_for_parts(
    manifest_dir: str | Path,
    prefix: str,
    parts: Sequence[str],
    out_dir: str | Path,
    speed_perturb: bool = False,
    num_jobs: int = 1,
) -> list[Optional[Path]]:
    """Each part in turn; speed perturbation only applies to parts named ``train*``."""
    return [
        compute_fbank_for_part(
            manifest_dir, prefix, part, out_dir,
            speed_perturb=speed_perturb and part.startswith("train"), num_jobs=num_jobs,
        )
        for part in parts
    ]
