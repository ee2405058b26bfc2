"""The padding mask of a right-padded batch: the one helper every model, objective and loop uses."""

from __future__ import annotations

from torch import Tensor
import torch


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Which steps of a right-padded batch are padding.

    Args:
        lengths: valid steps per utterance ``[batch]`` (frames or samples, any integer dtype).
        max_len: steps of the padded batch.
    Returns:
        BoolTensor ``[batch, max_len]`` on ``lengths``' device, True at padded steps
        (``~mask`` is the valid-step mask).
    """
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


__all__ = ["lengths_to_padding_mask"]
