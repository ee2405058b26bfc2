"""Build the lexicon side of a lang dir: words.txt, tokens.txt, lexicon*.txt, L.pt, L_disambig.pt.

Usage:
  python -m w2v.bin.prepare_lang --lang-dir data/lang_bpe_500 --token-type bpe
  python -m w2v.bin.prepare_lang --lang-dir data/lang_char --token-type char

Words come from <lang-dir>/transcript_words.txt (or --transcripts), plus --extra-words.
For bpe the lang dir must already hold bpe.model (w2v.bin.train_bpe). For char, words are
normalised (w2v.data.text) and, unless --spell-units false, every character (and Latin run) is a
word of its own too: an open vocabulary for the HLG.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from w2v.lang.lexicon import prepare_lang
from w2v.utils import setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--token-type", choices=["bpe", "char"], default="bpe")
    p.add_argument("--transcripts", type=Path, default=None,
                   help="default: <lang-dir>/transcript_words.txt")
    p.add_argument("--extra-words", type=Path, default=None, help="more words, one per line")
    p.add_argument("--spell-units", type=str2bool, default=True,
                   help="char: every unit is a word too, so the HLG can spell unseen words")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    logging.info("Preparing %s lang dir %s", args.token_type, args.lang_dir)
    written = prepare_lang(args.lang_dir, args.token_type, args.transcripts, args.extra_words,
                           spell_units=args.spell_units)
    for name, path in written.items():
        logging.info("wrote %s: %s", name, path)


if __name__ == "__main__":
    main()
