"""wav2vec (1.0) / vq-wav2vec future-prediction loss.

For each step ``k = 1..K`` a step-specific affine map ``h_k`` turns the context ``c_i`` into a
prediction of the encoder output ``z_{i+k}``; it is scored against the true frame and against
``lambda`` distractors drawn uniformly from the same sequence::

    L_k = -sum_i [ log sigmoid(z_{i+k}^T h_k(c_i)) + sum_{n=1..lambda} log sigmoid(-z~_n^T h_k(c_i)) ]

and the loss is ``sum_k L_k`` (the paper writes ``lambda * E[...]``, i.e. the sum over the
``lambda`` draws). The distractors of a frame ``i`` are drawn once and shared by all ``k``.

``offset`` shifts every target: step ``k`` predicts ``z_{i + k - 1 + offset}``. The paper's formula
is ``offset = 1``; fairseq's "auto" offset skips the frames whose receptive field overlaps ``c_i``'s
newest frame (``ceil(receptive_field / stride)``, 3 for the base encoder).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FuturePredictionOutput(NamedTuple):
    loss: Tensor  # scalar; mean over scored (i, k) pairs, or their sum
    accuracy: Tensor  # fraction of (i, k) whose positive scores above all its distractors
    num_predictions: int  # scored (i, k) pairs


def sample_sequence_negatives(
    batch: int, steps: int, num_negatives: int, lengths: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform draws (with replacement) of frame indices ``[batch, steps, num_negatives]`` inside each row's valid frames."""
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long)
    high = lengths.to("cpu", torch.long).clamp(min=1)
    u = torch.rand(batch, steps, num_negatives, generator=generator)
    return torch.floor(u * high[:, None, None].double()).long().clamp(max=steps - 1) if steps else u.long()


class FuturePredictionLoss(nn.Module):
    """Binary contrastive future prediction with step-specific affine maps ``h_k``.

    Args:
        context_dim: channels of c.
        target_dim: channels of z.
        num_steps: K.
        num_negatives: lambda.
        offset: see the module docstring.
    """

    def __init__(self, context_dim: int, target_dim: int, num_steps: int = 12, num_negatives: int = 10, offset: int = 1):
        super().__init__()
        if offset < 1:
            raise ValueError(f"offset must be >= 1, got {offset}")
        self.num_steps = num_steps
        self.num_negatives = num_negatives
        self.offset = offset
        self.target_dim = target_dim
        # All K maps in one linear layer: output channels [k * target_dim, (k + 1) * target_dim).
        self.project_to_steps = nn.Linear(context_dim, num_steps * target_dim)

    def step_predictions(self, context: Tensor) -> Tensor:
        """``h_k(c_i)`` for all k: ``[batch, steps, K, target_dim]``."""
        b, t, _ = context.shape
        return self.project_to_steps(context).view(b, t, self.num_steps, self.target_dim)

    def forward(
        self,
        context: Tensor,
        targets: Tensor,
        lengths: Tensor | None = None,
        negative_index: Tensor | None = None,
        reduction: str = "mean",
        generator: torch.Generator | None = None,
    ) -> FuturePredictionOutput:
        """
        Args:
            context: ``[batch, steps, context_dim]`` c.
            targets: ``[batch, steps, target_dim]`` z (or the quantized ẑ for vq-wav2vec).
            lengths: ``[batch]`` valid steps, None if unpadded.
            negative_index: optional ``[batch, steps, lambda]`` frame indices of the distractors;
                drawn uniformly inside each sequence when None.
        """
        if context.dim() != 3 or targets.shape[:2] != context.shape[:2]:
            raise ValueError(
                f"Expected context [B, T, C] and targets [B, T, D]. Found: {list(context.shape)}, {list(targets.shape)}"
            )
        b, t, _ = context.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=context.device)
        lengths = lengths.to(context.device)
        if negative_index is None:
            negative_index = sample_sequence_negatives(b, t, self.num_negatives, lengths, generator)
        negative_index = negative_index.to(context.device)

        preds = self.step_predictions(context).float()  # [B, T, K, D]
        z = targets.float()
        rows = torch.arange(b, device=context.device)[:, None, None]
        negs = z[rows, negative_index]  # [B, T, N, D]
        neg_logits = torch.einsum("btkd,btnd->btkn", preds, negs)

        total = preds.new_zeros(())
        correct = preds.new_zeros(())
        count = 0
        positions = torch.arange(t, device=context.device)
        for k in range(self.num_steps):
            shift = self.offset + k
            if shift >= t:
                break
            pos_logit = (preds[:, : t - shift, k] * z[:, shift:]).sum(-1)  # [B, T - shift]
            valid = positions[None, : t - shift] + shift < lengths[:, None]
            neg = neg_logits[:, : t - shift, k]  # [B, T - shift, N]
            per_step = -F.logsigmoid(pos_logit) - F.logsigmoid(-neg).sum(-1)
            total = total + per_step[valid].sum()
            with torch.no_grad():
                correct = correct + (pos_logit > neg.max(-1).values)[valid].float().sum()
            count += int(valid.sum())
        if count == 0:
            zero = context.sum() * 0.0
            return FuturePredictionOutput(zero, zero.detach(), 0)
        loss = total / count if reduction == "mean" else total
        return FuturePredictionOutput(loss, correct / count, count)
