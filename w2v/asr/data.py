"""Batches for CTC training and evaluation (lhotse samplers).

A batch is a dict, sorted by decreasing length (the k2 convention; the loss re-sorts anyway)::

    {"features": [B, T, F] float, "feature_lens": [B] int64,      # precomputed features, or
     "audio": [B, samples] float, "audio_lens": [B] int64,         # 16 kHz audio (SSL front end)
     "texts": list[str], "cut_ids": list[str]}

:func:`model_inputs` returns whichever of the two pairs a batch carries.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler, SpecAugment
from lhotse.dataset.collation import collate_audio, collate_features
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


def cut_text(cut) -> str:
    """The transcript of a cut: its supervisions' texts joined by a space."""
    return " ".join(s.text for s in cut.supervisions if s.text)


class CtcDataset(Dataset):
    """Maps a sampled CutSet to a padded feature batch; optional SpecAugment on train batches.

    With ``audio=True`` the batch holds 16 kHz audio instead (``audio`` [B, samples],
    ``audio_lens`` in samples) for a model with an SSL front end.
    """

    def __init__(self, spec_augment: Optional[torch.nn.Module] = None, audio: bool = False) -> None:
        self.spec_augment = spec_augment
        self.audio = audio

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        if self.audio:
            audio, audio_lens = collate_audio(cuts)
            return {"audio": audio, "audio_lens": audio_lens.to(torch.long),
                    "texts": [cut_text(c) for c in cuts], "cut_ids": [c.id for c in cuts]}
        features, feature_lens = collate_features(cuts)
        if self.spec_augment is not None:
            segments = torch.stack(
                [torch.arange(len(cuts)), torch.zeros(len(cuts), dtype=torch.int), feature_lens],
                dim=1,
            ).to(torch.int)
            features = self.spec_augment(features, supervision_segments=segments)
        return {
            "features": features,
            "feature_lens": feature_lens.to(torch.long),
            "texts": [cut_text(c) for c in cuts],
            "cut_ids": [c.id for c in cuts],
        }


def model_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, lengths) of a batch: features [B, T, F] and frames, or audio [B, samples] and samples."""
    if "audio" in batch:
        return batch["audio"], batch["audio_lens"]
    return batch["features"], batch["feature_lens"]


def default_spec_augment(frame_shift: float = 0.01, feature_dim: int = 80) -> SpecAugment:
    """icefall's LibriSpeech settings for 80-dim fbank at 10 ms: time warp 80 frames, 2 feature
    masks of ≤27 bins, ≤10 time masks of ≤100 frames (≤15% of the frames).

    Other features keep the same durations and fractions: time sizes scale with ``0.01 /
    frame_shift`` (20 ms SSL frames: warp 40, masks ≤50 frames) and the feature-mask size with
    ``feature_dim / 80`` (768-dim: ≤259 dims).
    """
    per_frame = 0.01 / frame_shift
    return SpecAugment(
        time_warp_factor=max(1, round(80 * per_frame)),
        num_feature_masks=2,
        features_mask_size=max(1, round(27 * feature_dim / 80)),
        num_frame_masks=10,
        frames_mask_size=max(1, round(100 * per_frame)),
        max_frames_mask_fraction=0.15,
    )


def make_sampler(
    cuts: CutSet,
    train: bool,
    max_duration: float,
    num_buckets: int = 10,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    seed: int = 0,
):
    """Train: shuffled DynamicBucketingSampler (drop_last); eval: SimpleCutSampler in order.

    ``world_size``/``rank`` default to the torch.distributed group (lhotse infers them), so each
    rank reads a disjoint share of the batches. With drop_last, a bucket holding less than one
    batch yields nothing, so the buckets are capped at ``total duration / max_duration``; below
    two, a shuffled SimpleCutSampler replaces the bucketing.
    """
    if train:
        if not cuts.is_lazy:  # eager: the total is known without a second read
            total = sum(c.duration for c in cuts)
            fit = int(total // (max_duration * (world_size or 1)))
            if fit < num_buckets:
                log.warning("%.0f s of training audio fill %d batches of %g s: %s", total, fit,
                            max_duration, f"{fit} buckets" if fit >= 2 else "no bucketing")
                num_buckets = fit
        if num_buckets < 2:
            return SimpleCutSampler(cuts, max_duration=max_duration, shuffle=True, drop_last=True,
                                    world_size=world_size, rank=rank, seed=seed)
        with warnings.catch_warnings():
            # Eager CutSets are fine here: the mini corpora fit in memory.
            warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
            return DynamicBucketingSampler(
                cuts,
                max_duration=max_duration,
                num_buckets=num_buckets,
                shuffle=True,
                drop_last=True,
                world_size=world_size,
                rank=rank,
                seed=seed,
            )
    return SimpleCutSampler(
        cuts, max_duration=max_duration, shuffle=False, world_size=world_size, rank=rank
    )


def make_dataloader(
    cuts: CutSet,
    train: bool,
    max_duration: float,
    num_buckets: int = 10,
    spec_augment: bool = True,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    num_workers: int = 0,
    seed: int = 0,
    audio: bool = False,
) -> DataLoader:
    """A DataLoader over ``cuts`` (with precomputed features) yielding CTC batch dicts.

    Args:
        cuts: cuts with features attached (``data/fbank/*_cuts_*.jsonl.gz``, or SSL features).
        train: shuffle + bucket + drop_last (+ SpecAugment when ``spec_augment``).
        max_duration: seconds of audio per batch (per rank).
        audio: batches of audio for a model with an SSL front end (which does its own SpecAugment).
    The sampler is ``loader.sampler``: call ``set_epoch`` each epoch; its ``state_dict`` goes into
    checkpoints.
    """
    sampler = make_sampler(cuts, train, max_duration, num_buckets, world_size, rank, seed)
    augment = None
    if train and spec_augment and not audio:
        first = next(iter(cuts))
        augment = default_spec_augment(first.frame_shift, first.num_features)
    dataset = CtcDataset(augment, audio)
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
    )
