"""Corpus directory → validated lhotse manifests (bad files reported, the rest kept).

Usage:
  python -m w2v.bin.prepare_corpus --corpus librispeech --corpus-dir download/LibriSpeech \
      --output-dir data/manifests --parts train-clean-100 dev-clean test-clean [--nj 2]
  python -m w2v.bin.prepare_corpus --corpus aishell --corpus-dir download/aishell \
      --output-dir data/manifests --parts train dev test [--resample true]
  python -m w2v.bin.prepare_corpus --corpus aishell --corpus-dir /path/to/wenet/data \
      --output-dir data/manifests --parts train dev test     # wenet's data/{train,dev,test}

Writes ``<output-dir>/<corpus>_{recordings,supervisions}_<part>.jsonl.gz`` and
``rejected_<corpus>_<part>.txt`` (one ``path<TAB>reason`` line per rejected utterance).
``--corpus-dir`` is the ``LibriSpeech`` directory, or for AISHELL-1 the one holding ``data_aishell/``
or a wenet data directory (``<part>/wav.scp`` + ``<part>/text``, or ``<part>/data.list``; audio
paths absolute or relative to the part directory; see :mod:`w2v.data.wenet`), recognised by its
layout and prepared into the same ``aishell_*`` manifests. One in the wrong layout fails at once
with a message saying what it holds (as ``w2v.bin.check_corpus``). Audio at another sample rate
is rejected unless ``--resample true``, which keeps it, resampled to 16 kHz on load, and logs per
rate how many files were; multi-channel files are rejected either way (not downmixed). Parts
already prepared are skipped (whatever ``--resample`` says: delete their manifests to redo them).
Exit status 1 when a requested part directory is missing, or a wenet part lacks its wav.scp or
text (the other parts are prepared first), 2 for bad arguments, a missing corpus directory or a
wrong layout.
"""

from __future__ import annotations

import argparse
import logging
import sys

from w2v.data.layout import layout_of
from w2v.data.prepare import MissingPartError, prepare_aishell, prepare_librispeech
from w2v.data.wenet import prepare_wenet
from w2v.utils import setup_logging, str2bool

PREPARERS = {"librispeech": prepare_librispeech, "aishell": prepare_aishell}
BY_LAYOUT = {**PREPARERS, "wenet": prepare_wenet}  # layout_of: an AISHELL corpus dir in wenet's layout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, choices=sorted(PREPARERS))
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--resample", type=str2bool, default=False,
                   help="keep audio at other sample rates, resampled to 16 kHz on load (default: reject it)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        prepare = BY_LAYOUT[layout_of(args.corpus, args.corpus_dir)]
        results = prepare(args.corpus_dir, args.output_dir, args.parts, nj=args.nj, resample=args.resample)
    except MissingPartError as e:
        logging.error(str(e))
        return 1
    except (FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 2
    for part, r in results.items():
        n_rej = "cached" if r.cached else f"{len(r.rejected)} rejected"
        if r.resampled:
            n_rej += f", {sum(r.resampled.values())} resampled"
        print(f"{args.corpus} {part}: {len(r.supervisions)} utterances ({n_rej})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
