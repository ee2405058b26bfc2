"""Estimate an ARPA n-gram LM (interpolated modified Kneser-Ney) and convert it to G.

Usage:
  python -m w2v.bin.train_lm --text data/lang_bpe_500/transcript_words.txt \
      --order 3 --out data/lm/3gram.arpa --words data/lang_bpe_500/words.txt
  # an existing ARPA instead of estimating one:
  python -m w2v.bin.train_lm --lm-arpa /path/lm.arpa --order 4 --out data/lm/4gram.arpa \
      --words data/lang_bpe_500/words.txt

With --words, words outside words.txt become <UNK> and G_<order>_gram.fst.txt (kaldilm,
#0 on backoff arcs) is written beside --out. Existing outputs are replaced (the recipe's stage
record decides whether this runs).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from w2v.lang.arpa import train_arpa
from w2v.lang.graph import arpa_to_fst_text
from w2v.lang.lexicon import WORD_SPECIALS
from w2v.lang.symbols import read_symbol_table
from w2v.utils import atomic_path, setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, help="training sentences, one per line")
    src.add_argument("--lm-arpa", type=Path, help="use this ARPA file instead of estimating one")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--out", type=Path, required=True, help="ARPA file to write, e.g. data/lm/3gram.arpa")
    p.add_argument("--words", type=Path, default=None, help="words.txt: vocabulary and G conversion")
    p.add_argument("--unk", default="<UNK>")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.lm_arpa is not None:
        logging.info("Using given ARPA %s", args.lm_arpa)
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.lm_arpa, tmp)
    else:
        vocab = None
        if args.words is not None:
            vocab = set(read_symbol_table(args.words)) - set(WORD_SPECIALS)
        logging.info("Estimating a %d-gram KN model from %s", args.order, args.text)
        train_arpa(args.text, args.out, order=args.order, unk=args.unk, vocab=vocab)
    if args.words is not None:
        g_txt = args.out.parent / f"G_{args.order}_gram.fst.txt"
        arpa_to_fst_text(args.out, args.words, max_order=args.order, out=g_txt)
        logging.info("wrote %s", g_txt)


if __name__ == "__main__":
    main()
