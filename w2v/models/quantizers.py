"""Vector quantizers of vq-wav2vec and wav2vec 2.0, their temperature schedules and perplexities.

* :class:`GumbelVectorQuantizer`: ``G`` groups of ``V`` learned codewords; a linear map gives
  ``G x V`` logits per frame; training picks codewords with a straight-through Gumbel-softmax
  (one-hot forward, soft-sample gradients backward); inference takes the argmax.
* :class:`KmeansVectorQuantizer`: the vq-wav2vec k-means variant; each group of the input picks its
  nearest codeword (Euclidean), gradients pass straight through to the input and the codebook is
  trained by ``||sg(z) - q||^2 + gamma ||z - sg(q)||^2``.

Temperature schedules are step functions ``num_updates -> temperature``; a pretrainer calls
``set_num_updates`` after every optimizer update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --------------------------------------------------------------------------------------------
# Temperature schedules


@dataclass(frozen=True)
class LinearTemperature:
    """vq-wav2vec: anneal linearly from ``start`` to ``end`` over ``anneal_updates``, then hold."""

    start: float = 2.0
    end: float = 0.5
    anneal_updates: int = 1

    @classmethod
    def over_fraction(cls, total_updates: int, fraction: float = 0.7, start: float = 2.0, end: float = 0.5):
        """The paper's "first 70 % of updates"."""
        return cls(start, end, max(1, int(round(fraction * total_updates))))

    def __call__(self, num_updates: int) -> float:
        frac = min(max(num_updates, 0) / self.anneal_updates, 1.0)
        return self.start + (self.end - self.start) * frac


@dataclass(frozen=True)
class ExponentialTemperature:
    """wav2vec 2.0: ``max(start * decay ** num_updates, floor)``; (2, 0.5, 0.999995) for BASE."""

    start: float = 2.0
    floor: float = 0.5
    decay: float = 0.999995

    def __call__(self, num_updates: int) -> float:
        return max(self.start * self.decay ** max(num_updates, 0), self.floor)


# --------------------------------------------------------------------------------------------
# Perplexity


def perplexity(probs: Tensor) -> Tensor:
    """Sum over groups of ``exp(entropy)`` of each group's distribution.

    Args:
        probs: ``[G, V]``, each row summing to one.

    Returns:
        scalar in ``[G, G * V]``.
    """
    entropy = -(probs * torch.log(probs.clamp_min(1e-7))).sum(dim=-1)
    return torch.exp(entropy).sum()


class QuantizerOutput(NamedTuple):
    quantized: Tensor  # [B, T, D]
    codes: Tensor  # [B, T, G] codeword index per group
    prob_perplexity: Tensor  # perplexity of the soft (noise-free) averaged distribution
    code_perplexity: Tensor  # perplexity of the hard codeword counts
    avg_probs: Tensor  # [G, V], input of the diversity loss
    commitment_loss: Tensor  # k-means loss; 0 for Gumbel
    temperature: float


def _masked_mean(x: Tensor, valid: Tensor | None) -> Tensor:
    """Mean over rows of ``x: [N, ...]`` where ``valid: [N]``."""
    if x.shape[0] == 0:
        return x.new_zeros(x.shape[1:])
    if valid is None:
        return x.mean(dim=0)
    weights = valid.to(x.dtype)
    return (x * weights.view(-1, *([1] * (x.dim() - 1)))).sum(dim=0) / weights.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer with straight-through Gumbel-softmax codeword selection.

    Args:
        input_dim: channels of the input frames.
        num_groups: G.
        num_vars: V codewords per group.
        code_dim: output dimension; each group contributes ``code_dim // G`` channels.
        temperature: schedule ``num_updates -> tau``.
        hidden_dim: if set, the logits come from a two-layer MLP (vq-wav2vec) instead of one linear.
    """

    def __init__(
        self,
        input_dim: int,
        num_groups: int = 2,
        num_vars: int = 320,
        code_dim: int = 256,
        temperature: LinearTemperature | ExponentialTemperature = ExponentialTemperature(),
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if code_dim % num_groups:
            raise ValueError(f"code_dim {code_dim} must be divisible by num_groups {num_groups}")
        self.num_groups = num_groups
        self.num_vars = num_vars
        self.schedule = temperature
        self.temperature = temperature(0)
        self.codevectors = nn.Parameter(torch.empty(num_groups * num_vars, code_dim // num_groups))
        nn.init.uniform_(self.codevectors)
        if hidden_dim is None:
            self.weight_proj = nn.Linear(input_dim, num_groups * num_vars)
        else:
            self.weight_proj = nn.Sequential(
                nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_groups * num_vars)
            )
        last = self.weight_proj if hidden_dim is None else self.weight_proj[-1]
        nn.init.normal_(last.weight, mean=0.0, std=1.0)
        nn.init.zeros_(last.bias)

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = self.schedule(num_updates)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> QuantizerOutput:
        """
        Args:
            x: ``[batch, frames, input_dim]``.
            valid: optional BoolTensor ``[batch, frames]``; padded frames do not enter the statistics.
        """
        if x.dim() != 3:
            raise ValueError(f"Expected [B, T, C] input. Found: {list(x.shape)}")
        batch, frames, _ = x.shape
        G, V = self.num_groups, self.num_vars
        logits = self.weight_proj(x).view(batch * frames, G, V).float()
        flat_valid = None if valid is None else valid.reshape(-1)

        codes = logits.argmax(dim=-1)  # [N, G]
        hard = F.one_hot(codes, V).to(logits.dtype)
        avg_probs = _masked_mean(torch.softmax(logits, dim=-1), flat_valid)
        with torch.no_grad():
            code_ppl = perplexity(_masked_mean(hard, flat_valid))
        prob_ppl = perplexity(avg_probs)

        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)
        else:
            onehot = hard
        onehot = onehot.to(x.dtype)
        # [N, G, V] x [G, V, d] -> [N, G, d]
        books = self.codevectors.view(G, V, -1)
        quantized = torch.einsum("ngv,gvd->ngd", onehot, books).reshape(batch, frames, G * books.shape[-1])
        return QuantizerOutput(
            quantized=quantized,
            codes=codes.view(batch, frames, G),
            prob_perplexity=prob_ppl,
            code_perplexity=code_ppl,
            avg_probs=avg_probs,
            commitment_loss=x.new_zeros(()),
            temperature=self.temperature,
        )


class KmeansVectorQuantizer(nn.Module):
    """vq-wav2vec k-means quantizer over ``G`` groups of the (optionally projected) input.

    Args:
        input_dim: channels of the input frames; must be divisible by ``num_groups``.
        num_groups: G; each group of ``input_dim // G`` channels is quantized separately.
        num_vars: V codewords per group.
        gamma: commitment weight.
    """

    def __init__(self, input_dim: int, num_groups: int = 2, num_vars: int = 320, gamma: float = 0.25) -> None:
        super().__init__()
        if input_dim % num_groups:
            raise ValueError(f"input_dim {input_dim} must be divisible by num_groups {num_groups}")
        self.num_groups = num_groups
        self.num_vars = num_vars
        self.gamma = gamma
        self.temperature = 0.0
        # unit scale: the input is expected to be normalised (see VqWav2VecConfig.quantizer_input_norm)
        self.codebook = nn.Parameter(torch.randn(num_groups, num_vars, input_dim // num_groups))

    def set_num_updates(self, num_updates: int) -> None:  # nothing to anneal
        pass

    def forward(self, x: Tensor, valid: Tensor | None = None) -> QuantizerOutput:
        """
        Args:
            x: ``[batch, frames, input_dim]``.
            valid: optional BoolTensor ``[batch, frames]``.
        """
        if x.dim() != 3:
            raise ValueError(f"Expected [B, T, C] input. Found: {list(x.shape)}")
        batch, frames, dim = x.shape
        G, V = self.num_groups, self.num_vars
        z = x.reshape(batch * frames, G, dim // G)
        # Squared distances [N, G, V] without materialising [N, G, V, d].
        dist = (
            z.pow(2).sum(-1, keepdim=True)
            - 2 * torch.einsum("ngd,gvd->ngv", z, self.codebook)
            + self.codebook.pow(2).sum(-1)[None]
        )
        codes = dist.argmin(dim=-1)  # [N, G]
        q = self.codebook[torch.arange(G, device=x.device)[None, :], codes]  # [N, G, d]

        flat_valid = None if valid is None else valid.reshape(-1)
        sq_codebook = (z.detach() - q).pow(2).mean(dim=(1, 2))
        sq_commit = (z - q.detach()).pow(2).mean(dim=(1, 2))
        commitment = _masked_mean(sq_codebook + self.gamma * sq_commit, flat_valid)

        straight = z + (q - z).detach()
        hard = F.one_hot(codes, V).to(x.dtype)
        avg = _masked_mean(hard, flat_valid).detach()
        ppl = perplexity(avg)
        return QuantizerOutput(
            quantized=straight.reshape(batch, frames, dim),
            codes=codes.view(batch, frames, G),
            prob_perplexity=ppl,
            code_perplexity=ppl,
            avg_probs=avg,
            commitment_loss=commitment,
            temperature=0.0,
        )
