"""The whole lang/LM/graph chain in one call, as the recipe stages run it one by one.

Used by tests and benchmarks to get a real lang dir from a handful of sentences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from w2v.lang.arpa import train_arpa
from w2v.lang.bpe import train_bpe
from w2v.lang.graph import compile_graphs
from w2v.lang.lexicon import prepare_lang
from w2v.utils import atomic_write_text


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
