"""Check part names and a corpus directory's layout before any stage runs (fast: no lhotse, no torch).

Usage:
  python -m w2v.bin.check_corpus --corpus librispeech --parts train-clean-100 dev-clean test-clean \
      [--corpus-dir /data/LibriSpeech] [--missing-parts-ok true]
  python -m w2v.bin.check_corpus --corpus aishell --parts train dev test [--corpus-dir /data/aishell]
  python -m w2v.bin.check_corpus --corpus aishell --parts train --corpus-dir DIR --part-inputs true

Part names are always checked; with ``--corpus-dir``, also that the directory is in the corpus's
layout (LibriSpeech: the ``LibriSpeech`` directory; AISHELL-1: the directory holding
``data_aishell/``, or a wenet data directory with ``<part>/wav.scp`` + ``<part>/text`` or
``<part>/data.list``) and holds every requested part (``--missing-parts-ok true``: only the layout,
for a corpus that stage 0 is still to complete). Exit status 0 and no output when all is well;
2 with one message on stderr otherwise (the same checks ``w2v.bin.prepare_corpus`` makes first).
``--part-inputs true`` prints, one per line, the paths stage 1 reads for the parts (the inputs of
their stage records: a part directory, the AISHELL transcript, a wenet part's wav.scp and text),
whether they exist or not; the layout is checked, the parts are not.
"""

from __future__ import annotations

import argparse
import sys

from w2v.data.layout import KNOWN_PARTS, check_layout, check_part_names, part_inputs
from w2v.utils import str2bool


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=sorted(KNOWN_PARTS))
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--corpus-dir", help="also check this directory's layout and parts")
    p.add_argument("--missing-parts-ok", type=str2bool, default=False,
                   help="with --corpus-dir: check the layout, not that every part is there")
    p.add_argument("--part-inputs", type=str2bool, default=False,
                   help="with --corpus-dir: print the files stage 1 reads for the parts, one per line")
    args = p.parse_args(argv)
    if args.part_inputs and args.corpus_dir is None:
        p.error("--part-inputs needs --corpus-dir")
    try:
        if args.corpus_dir is None:
            check_part_names(args.corpus, args.parts)
        else:
            missing_ok = args.missing_parts_ok or args.part_inputs
            check_layout(args.corpus, args.corpus_dir, args.parts, missing_ok=missing_ok)
        if args.part_inputs:
            for part in args.parts:
                print("\n".join(str(f) for f in part_inputs(args.corpus, args.corpus_dir, part)))
    except (FileNotFoundError, ValueError) as e:
        print(f"check_corpus: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
