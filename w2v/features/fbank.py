"""80-dim log-mel filterbank features into lhotse feature storage (the fbank recipe stage).

Cuts are built from a part's recordings + supervisions, trimmed to the supervisions, optionally
speed-perturbed (0.9, 1.1; train parts), and their features stored with ``LilcomChunkyWriter``.
A cut whose audio cannot be loaded is reported (file and error) and dropped; the rest goes on.

A part is done in chunks (:mod:`w2v.features.parts`): each in its own archive
``<prefix>_feats_<part>/feats-NNNNN.lca``, by ``num_jobs`` processes, of the chunks of one shard
when several machines share the part; finished chunks survive a kill, and the part's manifest is
merged from them in input order.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, RecordingSet, SupervisionSet

from w2v.features.parts import ChunkedPart, Shard

log = logging.getLogger(__name__)

NUM_MEL_BINS = 80
SPEED_FACTORS = (0.9, 1.1)
# Cuts per chunk: small enough that a part's chunks keep every worker busy, and a kill loses little.
CHUNK_CUTS = 200


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


def compute_fbank(
    cuts: list, storage_path: str | Path, num_mel_bins: int = NUM_MEL_BINS
) -> tuple[CutSet, list[FailedCut]]:
    """Features of ``cuts`` into one chunky archive ``storage_path`` (``.lca`` added).

    Returns:
        the cuts that succeeded, with features attached (input order), and the failures.
    """
    import torch

    torch.set_num_threads(1)
    extractor = fbank_extractor(num_mel_bins)
    done, failed = [], []
    Path(storage_path).parent.mkdir(parents=True, exist_ok=True)
    with LilcomChunkyWriter(storage_path) as writer:
        for cut in cuts:
            try:
                done.append(cut.compute_and_store_features(extractor, writer))
            except Exception as e:  # any decoding/IO error of one file must not stop the part
                failed.append(FailedCut.of(cut, e))
    return CutSet.from_cuts(done), failed


def _compute_chunk(cuts: list, storage_path: str, out: str, chunk: int, num_mel_bins: int) -> list[FailedCut]:
    """Worker: one chunk's features and, once they are stored, its manifest."""
    done, failed = compute_fbank(cuts, storage_path, num_mel_bins)
    ChunkedPart(out).write(chunk, done)
    return failed


def compute_fbank_for_part(
    manifest_dir: str | Path,
    prefix: str,
    part: str,
    out_dir: str | Path,
    speed_perturb: bool = False,
    num_jobs: int = 1,
    shard: Shard = Shard(),
    chunk_size: int = CHUNK_CUTS,
) -> Optional[Path]:
    """``out_dir/<prefix>_cuts_<part>.jsonl.gz`` (+ storage ``<prefix>_feats_<part>/``).

    ``shard``'s chunks of the part are computed in ``num_jobs`` processes; then the manifest is
    merged (atomically) if every shard is done.

    Returns:
        the manifest once written; None when it existed already (skipped), or when other shards
        still have chunks to do.
    """
    out = cuts_path(out_dir, prefix, part)
    if out.is_file():
        log.info("%s exists; skipping %s", out, part)
        return None
    rec_path, sup_path = manifest_paths(manifest_dir, prefix, part)
    for p in (rec_path, sup_path):
        if not p.is_file():
            raise FileNotFoundError(f"Missing manifest {p} (run the prepare stage first)")
    items = list(make_cuts(
        RecordingSet.from_file(rec_path), SupervisionSet.from_file(sup_path), speed_perturb
    ))
    chunks = ChunkedPart(out)
    plan, todo = chunks.begin([c.id for c in items], chunk_size, shard)
    log.info("%s: fbank for %d cuts (speed perturb: %s); shard %s: %d chunks to do in %d process(es)",
             part, len(items), speed_perturb, shard, len(todo), num_jobs)
    storage_dir = Path(out_dir) / f"{prefix}_feats_{part}"
    jobs = [
        ([items[j] for j in range(*plan.bounds(i))], str(storage_dir / f"feats-{i:05d}"), str(out), i, NUM_MEL_BINS)
        for i in todo
    ]
    if num_jobs <= 1 or len(jobs) <= 1:
        failed = [f for job in jobs for f in _compute_chunk(*job)]
    else:
        with ProcessPoolExecutor(min(num_jobs, len(jobs))) as ex:
            failed = [f for fs in ex.map(_compute_chunk, *zip(*jobs)) for f in fs]
    for f in failed:
        log.warning("Dropping cut %s: cannot load %s: %s", f.cut_id, f.source, f.error)
    return chunks.merge(required=False)


def merge_fbank_part(out_dir: str | Path, prefix: str, part: str) -> Path:
    """Write ``out_dir/<prefix>_cuts_<part>.jsonl.gz`` from the chunks every shard wrote.

    Raises:
        RuntimeError: naming the shards whose chunks are missing.
    """
    merged = ChunkedPart(cuts_path(out_dir, prefix, part)).merge(required=True)
    assert merged is not None
    return merged


def compute_fbank_for_parts(
    manifest_dir: str | Path,
    prefix: str,
    parts: Sequence[str],
    out_dir: str | Path,
    speed_perturb: bool = False,
    num_jobs: int = 1,
    shard: Shard = Shard(),
) -> list[Optional[Path]]:
    """Each part in turn; speed perturbation only applies to parts named ``train*``."""
    return [
        compute_fbank_for_part(
            manifest_dir, prefix, part, out_dir,
            speed_perturb=speed_perturb and part.startswith("train"), num_jobs=num_jobs, shard=shard,
        )
        for part in parts
    ]
