"""Download a corpus with lhotse's downloaders (for machines that are online).

Usage:
  python -m w2v.bin.download_corpus --corpus librispeech --target-dir download \
      --parts train-clean-100 dev-clean test-clean
  python -m w2v.bin.download_corpus --corpus aishell --target-dir download

LibriSpeech lands in ``<target-dir>/LibriSpeech/<part>``, AISHELL-1 (lhotse 1.33) in
``<target-dir>/aishell/data_aishell``: give ``--corpus-dir <target-dir>/aishell`` to the later
stages (egs/aishell/run.sh --download true does). Parts already there are not fetched again.
"""

from __future__ import annotations

import argparse
import logging
import sys

from w2v.utils import setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=["librispeech", "aishell"])
    p.add_argument("--target-dir", required=True)
    p.add_argument("--parts", nargs="*", default=["train-clean-100", "dev-clean", "test-clean"])
    args = p.parse_args(argv)
    setup_logging()
    from lhotse.recipes import download_aishell, download_librispeech

    try:
        if args.corpus == "librispeech":
            download_librispeech(args.target_dir, dataset_parts=args.parts)
        else:
            download_aishell(args.target_dir)
    except OSError as e:  # URLError and friends
        logging.error(f"download of {args.corpus} failed ({e}); offline? Use --corpus-dir instead")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
