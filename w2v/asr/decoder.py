"""The attention decoder of the joint CTC/attention model (wenet's U2 shape): a Transformer
decoder over the conformer encoder's output, trained with label smoothing beside the CTC loss,
used to decode (beam search) and to rescore CTC or HLG n-best lists.

Token sequences enter as ``[<sos/eos>, y1 .. yU]`` and are predicted as ``[y1 .. yU, <sos/eos>]``
(one symbol starts and ends a sentence, as in wenet and icefall's conformer_ctc).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from w2v.models.padding import lengths_to_padding_mask

IGNORE = -1  # target padding


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query and key/value inputs (self or cross)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: ``[B, U, D]``; memory: ``[B, T, D]``; mask: ``[B, U or 1, T]``, True where a query may
        not look. Returns ``[B, U, D]``."""
        b, u, d = x.shape
        h = self.num_heads
        q = self.q(x).view(b, u, h, d // h).transpose(1, 2)
        k, v = self.kv(memory).view(b, memory.size(1), 2, h, d // h).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, u, d))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, attention over the encoder output, feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, self_mask, memory, memory_mask):
        y = self.norm1(x)
        x = x + self.dropout(self.self_attn(y, y, self_mask))
        x = x + self.dropout(self.cross_attn(self.norm2(x), memory, memory_mask))
        return x + self.dropout(self.ffn(self.norm3(x)))


class AttentionDecoder(nn.Module):
    """``(encoder output [B, T, D], its lengths [B], token inputs [B, U]) -> logits [B, U, V]``."""

    def __init__(self, num_tokens: int, d_model: int, num_heads: int, num_layers: int, ffn_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(num_tokens, d_model)
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, num_tokens)
        self.dropout = nn.Dropout(dropout)

    def _positions(self, u: int, device) -> torch.Tensor:
        pos = torch.arange(u, device=device, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32)
                        * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(u, self.d_model, device=device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return pe

    def forward(self, memory: torch.Tensor, memory_lens: torch.Tensor, ys_in: torch.Tensor,
                ys_lens: torch.Tensor) -> torch.Tensor:
        """memory: ``[B, T, D]``; ys_in: ``[B, U]`` token ids starting with ``<sos/eos>`` (padding
        anything, masked by ``ys_lens``). Returns logits ``[B, U, V]``."""
        b, u = ys_in.shape
        x = self.embed(ys_in) * math.sqrt(self.d_model) + self._positions(u, ys_in.device).to(memory.dtype)
        x = self.dropout(x)
        causal = torch.ones(u, u, dtype=torch.bool, device=ys_in.device).triu(1)
        # a padded query may see itself only: no row is fully masked (NaN softmax)
        self_mask = causal[None] | (lengths_to_padding_mask(ys_lens, u)[:, None, :] & ~torch.eye(
            u, dtype=torch.bool, device=ys_in.device)[None])
        memory_pad = lengths_to_padding_mask(memory_lens, memory.size(1))
        memory_pad = memory_pad & ~memory_pad.all(dim=1, keepdim=True)  # an empty memory: attend anyway
        memory_mask = memory_pad[:, None, :]
        for layer in self.layers:
            x = layer(x, self_mask, memory, memory_mask)
        return self.output(self.norm(x))


def decoder_io(targets: Sequence[Sequence[int]], sos_eos: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ys_in ``[B, U+1]`` = sos + y, ys_out ``[B, U+1]`` = y + eos padded with IGNORE, lengths)."""
    lens = torch.tensor([len(t) + 1 for t in targets], dtype=torch.long, device=device)
    u = int(lens.max()) if len(targets) else 1
    ys_in = torch.full((len(targets), u), sos_eos, dtype=torch.long, device=device)
    ys_out = torch.full((len(targets), u), IGNORE, dtype=torch.long, device=device)
    for i, t in enumerate(targets):
        t = torch.as_tensor(list(t), dtype=torch.long, device=device)
        ys_in[i, 1: len(t) + 1] = t
        ys_out[i, : len(t)] = t
        ys_out[i, len(t)] = sos_eos
    return ys_in, ys_out, lens


def label_smoothing_loss(logits: torch.Tensor, ys_out: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, int]:
    """(summed KL of the smoothed target against the prediction, number of target tokens)."""
    valid = ys_out != IGNORE
    loss = F.cross_entropy(logits[valid].float(), ys_out[valid], label_smoothing=smoothing, reduction="sum")
    return loss, int(valid.sum())


@torch.no_grad()
def score_sequences(decoder: AttentionDecoder, memory: torch.Tensor, memory_len: int,
                    seqs: Sequence[Sequence[int]], sos_eos: int) -> torch.Tensor:
    """Log-probability of each token sequence (ending with ``<sos/eos>``) given one utterance's
    encoder output ``memory [T, D]``. Returns ``[len(seqs)]``."""
    if not seqs:
        return torch.zeros(0)
    n = len(seqs)
    ys_in, ys_out, lens = decoder_io(seqs, sos_eos, memory.device)
    logp = decoder(memory[None].expand(n, -1, -1), torch.full((n,), memory_len, device=memory.device),
                   ys_in, lens).float().log_softmax(-1)
    valid = ys_out != IGNORE
    picked = logp.gather(-1, ys_out.clamp(min=0)[..., None])[..., 0]
    return (picked * valid).sum(-1).cpu()
