"""Corpus directory → validated lhotse manifests (bad files reported, the rest kept).

Usage:
  python -m w2v.bin.prepare_corpus --corpus librispeech --corpus-dir download/LibriSpeech \
      --output-dir data/manifests --parts train-clean-100 dev-clean test-clean [--nj 2]
  python -m w2v.bin.prepare_corpus --corpus aishell --corpus-dir download \
      --output-dir data/manifests --parts train dev test

Writes ``<output-dir>/<corpus>_{recordings,supervisions}_<part>.jsonl.gz`` and
``rejected_<corpus>_<part>.txt`` (one ``path<TAB>reason`` line per rejected utterance).
Parts already prepared are skipped. Exit status 1 when a requested part directory is missing
(the other parts are prepared first), 2 for bad arguments or a missing corpus directory.
"""

from __future__ import annotations

import argparse
import logging
import sys

from w2v.data.prepare import MissingPartError, prepare_aishell, prepare_librispeech
from w2v.utils import setup_logging

PREPARERS = {"librispeech": prepare_librispeech, "aishell": prepare_aishell}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=sorted(PREPARERS))
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--nj", type=int, default=2)
    args = p.parse_args(argv)
    setup_logging()
    try:
        results = PREPARERS[args.corpus](args.corpus_dir, args.output_dir, args.parts, nj=args.nj)
    except MissingPartError as e:
        logging.error(str(e))
        return 1
    except (FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 2
    for part, r in results.items():
        n_rej = "cached" if r.cached else f"{len(r.rejected)} rejected"
        print(f"{args.corpus} {part}: {len(r.supervisions)} utterances ({n_rej})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
