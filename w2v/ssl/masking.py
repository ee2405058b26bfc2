"""Span masking for masked-prediction pretraining (wav2vec 2.0, HuBERT, data2vec, WavLM).

Each valid step of an utterance becomes a span start with probability ``p``; the ``M`` steps
from a start on are masked, and spans may overlap. With ``p = 0.065, M = 10`` about
``1 - (1 - p) ** M ≈ 49 %`` of the steps end up masked. Padding (steps at or beyond an utterance's
length) is never masked.

The number of starts per utterance is ``p * length`` rounded at random (so its expectation is exact)
and the starts are drawn without replacement among the positions whose span fits inside the
utterance, as fairseq does; fairseq writes the same quantity as ``mask_prob = p * M``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from w2v.models.padding import lengths_to_padding_mask


def compute_span_mask(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    lengths: Tensor | None = None,
    min_masks: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample overlapping spans of masked steps.

    Args:
        shape: ``(batch, steps)``.
        mask_prob: probability that a valid step starts a span (paper's ``p``).
        mask_length: span length ``M`` in steps.
        lengths: ``[batch]`` number of valid steps per row; ``None`` means all ``steps`` are valid.
        min_masks: at least this many spans per row (when the row is long enough to hold one).
        generator: optional random generator, for reproducible masks.

    Returns:
        BoolTensor ``[batch, steps]``, True where masked; always False at padded steps.
    """
    batch, steps = shape
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long)
    lengths = lengths.to("cpu", torch.long).clamp(max=steps)
    if lengths.shape != (batch,):
        raise ValueError(f"Expected lengths of shape [{batch}]. Found: {list(lengths.shape)}")
    if batch == 0 or steps == 0:
        return torch.zeros(batch, steps, dtype=torch.bool, device=device)

    # Randomly rounded number of spans per row.
    expected = mask_prob * lengths.double()
    num_starts = torch.floor(expected + torch.rand(batch, generator=generator, dtype=torch.double)).long()
    num_starts = torch.maximum(num_starts, torch.full_like(num_starts, min_masks))
    # A span must fit in the row; a row shorter than a span gets one (clipped) span from step 0.
    num_positions = (lengths - mask_length + 1).clamp(min=1)
    num_positions = torch.where(lengths > 0, num_positions, torch.zeros_like(num_positions))
    num_starts = torch.minimum(num_starts, num_positions)

    # Sampling without replacement: the num_starts positions with the smallest random keys.
    keys = torch.rand(batch, steps, generator=generator)
    keys[lengths_to_padding_mask(num_positions, steps)] = float("inf")
    ranks = keys.argsort(dim=1).argsort(dim=1)
    starts = ranks < num_starts[:, None]

    # Dilate every start over the M following steps: count of starts in (t - M, t] > 0.
    csum = torch.cumsum(starts.long(), dim=1)
    shifted = torch.zeros_like(csum)
    if mask_length < steps:
        shifted[:, mask_length:] = csum[:, :-mask_length]
    mask = (csum - shifted) > 0
    mask &= ~lengths_to_padding_mask(lengths, steps)
    return mask.to(device) if device is not None else mask


def compute_channel_mask(
    batch: int,
    channels: int,
    mask_prob: float,
    mask_length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Spans over feature channels, one draw per utterance (used when fine-tuning).

    Returns:
        BoolTensor ``[batch, channels]``; apply as ``x.masked_fill(mask[:, None, :], 0)``
        on ``x: [batch, frames, channels]``.
    """
    return compute_span_mask(
        (batch, channels), mask_prob, mask_length, generator=generator, device=device
    )


def apply_channel_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Zero the masked channels of ``x: [batch, frames, channels]`` with ``mask: [batch, channels]``."""
    if x.dim() != 3 or mask.shape != (x.shape[0], x.shape[2]):
        raise ValueError(
            f"Expected x [B, T, C] and mask [B, C]. Found: {list(x.shape)} and {list(mask.shape)}"
        )
    return x.masked_fill(mask[:, None, :], 0.0)
