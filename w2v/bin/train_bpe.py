"""Train the sentencepiece model of a BPE lang dir.

Usage:
  python -m w2v.bin.train_bpe \
      --transcripts data/lang_bpe_500/transcript_words.txt \
      --vocab-size 500 --lang-dir data/lang_bpe_500

Writes <lang-dir>/bpe.model (ids: 0 <blk>, 1 <sos/eos>, 2 <unk>), replacing an existing one (the
recipe's stage record decides whether this runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from w2v.lang.bpe import train_bpe
from w2v.utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transcripts", type=Path, required=True, help="one utterance per line")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")
    p.add_argument("--character-coverage", type=float, default=1.0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    model = args.lang_dir / "bpe.model"
    logging.info("Training %s model, vocab %d, on %s", args.model_type, args.vocab_size, args.transcripts)
    train_bpe(args.transcripts, model, args.vocab_size, args.model_type, args.character_coverage)


if __name__ == "__main__":
    main()
