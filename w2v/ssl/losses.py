"""Loss terms of the masked-prediction objectives, each a plain function of tensors.

* wav2vec 2.0: contrastive ``L_m`` over masked steps with distractors from other masked steps of
  the same utterance (:func:`sample_masked_negatives`, :func:`contrastive_loss`), diversity ``L_d``
  (:func:`diversity_loss`) and the L2 penalty on the feature encoder output (:func:`feature_penalty`).
* HuBERT / WavLM: cosine similarity against projected codeword embeddings
  (:func:`codeword_logits`, :func:`masked_prediction_loss`).
* data2vec: regression to teacher targets (:func:`regression_loss`).

Losses are means over the scored steps (``reduction="sum"`` gives the paper's sums).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from w2v.models.quantizers import perplexity


class ContrastiveOutput(NamedTuple):
    loss: Tensor  # scalar
    logits: Tensor  # [N, 1 + K], column 0 is the positive
    accuracy: Tensor  # fraction of steps whose positive scores strictly above every distractor


def sample_masked_negatives(mask: Tensor, num_negatives: int, generator: torch.Generator | None = None):
    """Draw distractors for every masked step among the *other* masked steps of its utterance.

    Draws are uniform and with replacement (as fairseq), so ``num_negatives`` may exceed the
    number of masked steps.

    Args:
        mask: BoolTensor ``[batch, steps]``.
        num_negatives: K.

    Returns:
        ``(index [N, K], valid [N, K])``: ``index`` points into the masked steps flattened in row-major
        order (``x[mask]``); ``valid`` is False where the utterance has a single masked step (no
        distractor exists; the index then points to the step itself).
    """
    device = mask.device
    counts = mask.sum(dim=1)  # [B]
    offsets = torch.cumsum(counts, 0) - counts  # first flat index of each row
    row = torch.arange(mask.shape[0], device=device)[:, None].expand_as(mask)[mask]  # [N]
    rank = torch.arange(int(counts.sum()), device=device) - offsets[row]  # position within row
    others = (counts[row] - 1).clamp(min=0)  # [N] candidates per step
    u = torch.rand(len(row), num_negatives, generator=generator).to(device)
    draw = torch.floor(u * others[:, None].to(u.dtype)).long()
    draw = draw + (draw >= rank[:, None]).long()  # skip the step itself
    valid = (others > 0)[:, None].expand(-1, num_negatives)
    draw = torch.where(valid, draw, rank[:, None].expand_as(draw))
    return offsets[row][:, None] + draw, valid


def contrastive_logits(
    predictions: Tensor,
    positives: Tensor,
    negatives: Tensor,
    temperature: float = 0.1,
    negatives_valid: Tensor | None = None,
) -> Tensor:
    """Cosine similarities / temperature of each prediction against its positive and distractors.

    A distractor identical to the positive (all channels equal) or marked invalid scores ``-inf``.

    Args:
        predictions: ``[N, D]`` context vectors c_t (after the final projection).
        positives: ``[N, D]`` quantized targets q_t.
        negatives: ``[N, K, D]`` distractors.

    Returns:
        ``[N, 1 + K]`` logits, positive first.
    """
    candidates = torch.cat([positives[:, None, :], negatives], dim=1).float()
    logits = F.cosine_similarity(predictions[:, None, :].float(), candidates, dim=-1) / temperature
    same = (negatives == positives[:, None, :]).all(dim=-1)
    if negatives_valid is not None:
        same = same | ~negatives_valid
    if same.any():
        logits = logits.clone()
        logits[:, 1:] = logits[:, 1:].masked_fill(same, float("-inf"))
    return logits


def contrastive_loss(logits: Tensor, reduction: str = "mean") -> ContrastiveOutput:
    """``-log softmax(logits)[:, 0]`` (the positive is column 0), with accuracy."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return ContrastiveOutput(zero, logits, zero.detach())
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits, target, reduction=reduction)
    with torch.no_grad():
        best_negative = logits[:, 1:].max(dim=1).values if logits.shape[1] > 1 else torch.full_like(logits[:, 0], float("-inf"))
        accuracy = (logits[:, 0] > best_negative).float().mean()
    return ContrastiveOutput(loss, logits, accuracy)


def wav2vec2_contrastive_loss(
    context: Tensor,
    quantized: Tensor,
    mask: Tensor,
    num_negatives: int = 100,
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> ContrastiveOutput:
    """wav2vec 2.0 ``L_m`` at the masked steps.

    Args:
        context: ``[batch, steps, D]`` projected transformer outputs.
        quantized: ``[batch, steps, D]`` projected quantized targets.
        mask: BoolTensor ``[batch, steps]``, the masked steps (distractors come from these).
    """
    c = context[mask]
    q = quantized[mask]
    index, valid = sample_masked_negatives(mask, num_negatives, generator)
    logits = contrastive_logits(c, q, q[index], temperature, valid)
    return contrastive_loss(logits)


def diversity_loss(avg_probs: Tensor) -> Tensor:
    """``L_d = (GV - sum_g exp(H(p_g))) / GV``: 0 at uniform ``p``, ``(GV - G) / GV`` at one-hot.

    Args:
        avg_probs: ``[G, V]``, softmax of the codeword logits (no Gumbel noise) averaged over frames.
    """
    groups, num_vars = avg_probs.shape
    total = groups * num_vars
    return (total - perplexity(avg_probs)) / total


def feature_penalty(features: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared activation of the feature encoder output ``[batch, frames, C]`` (valid frames)."""
    sq = features.float().pow(2)
    if valid is None:
        return sq.mean()
    return sq[valid].mean() if valid.any() else sq.sum() * 0.0


def codeword_logits(projected: Tensor, embeddings: Tensor, temperature: float = 0.1) -> Tensor:
    """HuBERT: cosine similarity of ``projected [N, D]`` with every codeword ``embeddings [C, D]`` / temperature."""
    return F.cosine_similarity(projected.float()[:, None, :], embeddings.float()[None, :, :], dim=-1) / temperature


def masked_prediction_loss(logits: Tensor, labels: Tensor, reduction: str = "mean"):
    """Cross-entropy of cluster ids. Returns ``(loss, accuracy)``; ``logits [N, C]``, ``labels [N]``."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    loss = F.cross_entropy(logits, labels, reduction=reduction)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
    return loss, accuracy


def regression_loss(predictions: Tensor, targets: Tensor, beta: float = 0.0) -> Tensor:
    """data2vec: L2 (``beta == 0``) or smooth L1 with threshold ``beta``, mean over steps and channels."""
    if predictions.numel() == 0:
        return predictions.sum() * 0.0
    if beta == 0:
        return F.mse_loss(predictions.float(), targets.float())
    return F.smooth_l1_loss(predictions.float(), targets.float(), beta=beta)
