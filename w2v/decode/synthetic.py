"""Peaky CTC output made from known token sequences, for tests and benchmarks."""

from __future__ import annotations

from typing import Sequence

import torch

# A five-sentence toy corpus (20 lines) for lang/graph/decoding tests.
TOY_SENTENCES = [
    "THE CAT SAT ON THE MAT",
    "A DOG RAN IN THE PARK",
    "THEY SAW THE CAT AND THE DOG",
    "THE MAT IS RED AND THE PARK IS GREEN",
    "A RED CAT SAW A GREEN DOG",
] * 4


def peaky_log_probs(
    token_seqs: Sequence[Sequence[int]],
    vocab_size: int,
    frames_per_token: int = 2,
    blanks_between: int = 1,
    peak: float = 8.0,
    noise: float = 1.0,
    seed: int = 0,
    num_confusable: int = 0,
    confusable_gap: tuple[float, float] = (3.0, 12.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs whose forced path spells ``token_seqs`` (blank = 0).

    Each token fills ``frames_per_token`` frames followed by ``blanks_between`` blank frames,
    with leading/trailing blanks; the path's label gets logit ``peak`` over Gaussian noise
    of std ``noise`` on every class. A trained model's output is not uniformly noisy: most
    classes sit far below the winner and a few acoustically close ones near it, which
    ``num_confusable`` classes per frame, ``confusable_gap`` (uniform, nats) below the path
    label, imitate.
    Returns:
      (log_probs [B, T, V] zero-padded past each length, lengths [B])
    """
    g = torch.Generator().manual_seed(seed)
    paths = []
    for seq in token_seqs:
        path = [0] * blanks_between
        for t in seq:
            if not 0 < t < vocab_size:
                raise ValueError(f"token {t} outside 1..{vocab_size - 1}")
            path += [t] * frames_per_token + [0] * blanks_between
        paths.append(path or [0])
    lengths = torch.tensor([len(p) for p in paths], dtype=torch.int32)
    T = int(lengths.max())
    logits = noise * torch.randn(len(paths), T, vocab_size, generator=g)
    for b, path in enumerate(paths):
        frames, labels = torch.arange(len(path)), torch.tensor(path)
        logits[b, frames, labels] += peak
        if num_confusable:
            others = torch.randint(0, vocab_size, (len(path), num_confusable), generator=g)
            lo, hi = confusable_gap
            gap = lo + (hi - lo) * torch.rand(len(path), num_confusable, generator=g)
            top = logits[b, frames, labels].unsqueeze(1)
            cand = (top - gap).masked_fill(others == labels.unsqueeze(1), float("-inf"))
            logits[b, frames.unsqueeze(1), others] = torch.maximum(logits[b, frames.unsqueeze(1), others], cand)
    log_probs = logits.log_softmax(dim=-1)
    for b, n in enumerate(lengths.tolist()):
        log_probs[b, n:] = 0.0
    return log_probs, lengths
