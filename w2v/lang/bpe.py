"""Sentencepiece BPE/unigram models with the k2 special pieces in fixed places.

Id 0 is the CTC blank ``<blk>``, id 1 ``<sos/eos>`` and id 2 ``<unk>`` (icefall's layout), so
a network's output index ``i`` is piece ``i`` and ``tokens.txt`` can be read off the model.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import sentencepiece as spm

from w2v.utils import atomic_path

BLANK = "<blk>"
SOS_EOS = "<sos/eos>"
UNK = "<unk>"


def train_bpe(
    transcripts: str | os.PathLike,
    model_path: str | os.PathLike,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> Path:
    """Train a sentencepiece model on ``transcripts`` (one utterance per line).

    Args:
      transcripts: text file, upper-case words separated by spaces.
      model_path: where ``bpe.model`` goes; written atomically, ``.vocab`` beside it.
      vocab_size: number of pieces including ``<blk>``, ``<sos/eos>``, ``<unk>``.
      model_type: ``unigram`` or ``bpe``.
    Returns:
      ``model_path``.
    """
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    transcripts = Path(transcripts)
    if not transcripts.is_file():
        raise FileNotFoundError(f"transcripts not found: {transcripts}")
    model_path = Path(model_path)
    with atomic_path(model_path) as tmp:
        prefix = Path(f"{tmp}.sp")  # sentencepiece appends .model / .vocab itself
        try:
            _train(transcripts, prefix, vocab_size, model_type, character_coverage)
        except RuntimeError as e:
            if "Vocabulary size too high" in str(e):
                raise ValueError(f"--vocab-size {vocab_size} too large for {transcripts}: {e}") from e
            raise
        os.replace(f"{prefix}.model", tmp)
        vocab = Path(f"{prefix}.vocab")
        if vocab.exists():
            shutil.move(vocab, model_path.with_suffix(".vocab"))
    sp = load_bpe(model_path)
    if sp.piece_to_id(BLANK) != 0 or sp.unk_id() != 2:
        raise RuntimeError(f"unexpected special ids in {model_path}")
    logging.info("Trained %s model, %d pieces: %s", model_type, sp.get_piece_size(), model_path)
    return model_path


def _train(transcripts: Path, prefix: Path, vocab_size: int, model_type: str, coverage: float) -> None:
    spm.SentencePieceTrainer.train(
        input=str(transcripts),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=coverage,
        # <blk> and <sos/eos> as user-defined pieces take ids 0 and 1; the unknown piece
        # follows; no bos/eos pieces because CTC never emits them.
        user_defined_symbols=[BLANK, SOS_EOS],
        unk_id=2,
        bos_id=-1,
        eos_id=-1,
        input_sentence_size=100_000_000,
        minloglevel=2,
    )


def load_bpe(model_path: str | os.PathLike) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    if not sp.load(str(model_path)):
        raise RuntimeError(f"cannot load sentencepiece model {model_path}")
    return sp
