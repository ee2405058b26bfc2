"""WavLM utterance mixing: overlap part of an utterance with a segment of another one from the batch.

The model still predicts the primary utterance's labels, which teaches it to pick out the main
speaker. For a chosen primary of ``L`` valid samples a segment of fewer than ``L / 2`` samples is
cut from another utterance, scaled to a primary-to-segment energy ratio drawn uniformly in
``[-5, 5]`` dB, and added at a random position.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class MixRegion(NamedTuple):
    primary: int  # row that was mixed
    secondary: int  # row the segment came from
    start: int  # first mixed sample in the primary
    length: int  # mixed samples
    source_start: int  # first sample of the segment in the secondary
    energy_ratio_db: float  # 10 log10(E_primary / E_scaled_segment), mean-square energies


def utterance_mix(
    waveforms: Tensor,
    lengths: Tensor | None = None,
    mix_prob: float = 0.2,
    max_overlap: float = 0.5,
    energy_ratio_db: tuple[float, float] = (-5.0, 5.0),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[MixRegion]]:
    """Mix a segment of another utterance into a random ``mix_prob`` share of the rows.

    Args:
        waveforms: ``[batch, samples]``.
        lengths: ``[batch]`` valid samples (None: all).
        mix_prob: probability that a row is mixed.
        max_overlap: the segment is shorter than this fraction of the primary's length.
        energy_ratio_db: range of the primary/segment energy ratio.

    Returns:
        ``(mixed [batch, samples], regions)``; padding stays zero and the input is not modified.
    """
    if waveforms.dim() != 2:
        raise ValueError(f"Expected 2D (batch, time) audio. Found: {list(waveforms.shape)}")
    batch, samples = waveforms.shape
    if lengths is None:
        lengths = torch.full((batch,), samples, dtype=torch.long)
    lengths = lengths.cpu().long()
    out = waveforms.clone()
    regions: list[MixRegion] = []
    if batch < 2:
        return out, regions

    def rand() -> float:
        return float(torch.rand((), generator=generator))

    for b in range(batch):
        if rand() >= mix_prob:
            continue
        length = int(lengths[b])
        other = int(torch.randint(batch - 1, (), generator=generator))
        other += other >= b
        other_length = int(lengths[other])
        limit = min(int(max_overlap * length - 1e-9), other_length)  # strictly below max_overlap
        if limit < 1:
            continue
        seg_len = 1 + int(rand() * limit)
        seg_len = min(seg_len, limit)
        src = int(rand() * (other_length - seg_len + 1))
        dst = int(rand() * (length - seg_len + 1))
        segment = waveforms[other, src : src + seg_len].float()
        e_primary = waveforms[b, :length].float().pow(2).mean()
        e_segment = segment.pow(2).mean()
        if e_primary <= 0 or e_segment <= 0:
            continue
        lo, hi = energy_ratio_db
        ratio_db = lo + (hi - lo) * rand()
        scale = torch.sqrt(e_primary / (e_segment * 10.0 ** (ratio_db / 10.0)))
        out[b, dst : dst + seg_len] += (scale * segment).to(out.dtype)
        regions.append(MixRegion(b, other, dst, seg_len, src, ratio_db))
    return out, regions
