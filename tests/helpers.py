"""Synthetic data for tests and benchmarks: a toy corpus, peaky CTC output of known token
sequences, and a whole lang dir with its graphs built from a handful of sentences.

Not part of the package: nothing in ``w2v`` needs them. Tests import ``tests.helpers``
(``pythonpath = ["."]``); benchmarks put the repository root on ``sys.path`` first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from w2v.lang.arpa import train_arpa
from w2v.lang.bpe import train_bpe
from w2v.lang.graph import compile_graphs
from w2v.lang.lexicon import prepare_lang
from w2v.utils import atomic_write_text

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


def build_lang_and_graphs(
    work_dir: str | os.PathLike,
    sentences: Sequence[str],
    token_type: str = "bpe",
    vocab_size: int = 100,
    lm_order: int = 3,
    rescore_order: int = 4,
) -> tuple[Path, Path]:
    """transcripts → (bpe.model) → lang dir → n-gram ARPAs → HLG.pt + G_<rescore_order>_gram.pt.

    Returns:
      (lang_dir, lm_dir) under ``work_dir``.
    """
    work_dir = Path(work_dir)
    lang_dir = work_dir / ("lang_bpe" if token_type == "bpe" else "lang_char")
    lm_dir = work_dir / "lm"
    transcripts = lang_dir / "transcript_words.txt"
    atomic_write_text(transcripts, "".join(s.strip() + "\n" for s in sentences))
    if token_type == "bpe":
        train_bpe(transcripts, lang_dir / "bpe.model", vocab_size)
    prepare_lang(lang_dir, token_type)
    for order in sorted({lm_order, rescore_order}):
        train_arpa(transcripts, lm_dir / f"{order}gram.arpa", order=order)
    compile_graphs(lang_dir, lm_dir, lm_order, rescore_order)
    return lang_dir, lm_dir
