"""Compile HLG.pt (and the rescoring G_4_gram.pt) as icefall does.

Usage:
  python -m w2v.bin.compile_graph --lang-dir data/lang_bpe_500 --lm-dir data/lm

Reads <lang-dir>/{tokens.txt,words.txt,L_disambig.pt} and <lm-dir>/G_3_gram.fst.txt (or
3gram.arpa); writes <lang-dir>/HLG.pt, and <lm-dir>/G_4_gram.pt when 4gram.arpa exists,
replacing existing graphs (the recipe's stage record decides whether this runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from w2v.lang.graph import compile_graphs
from w2v.utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--lm-dir", type=Path, required=True)
    p.add_argument("--lm-order", type=int, default=3, help="order of the G inside HLG")
    p.add_argument("--rescore-order", type=int, default=4, help="order of the rescoring G")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    logging.info("Compiling graphs for %s with LMs from %s", args.lang_dir, args.lm_dir)
    for name, path in compile_graphs(args.lang_dir, args.lm_dir, args.lm_order, args.rescore_order).items():
        logging.info("%s: %s", name, path)


if __name__ == "__main__":
    main()
