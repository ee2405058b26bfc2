"""Synthesise a speech corpus in the LibriSpeech or AISHELL-1 on-disk layout (espeak-ng voices).

Usage:
  python -m w2v.bin.make_corpus --layout librispeech --out download [--size mini] [--seed 0]
  python -m w2v.bin.make_corpus --layout aishell --out download --minutes 10
  python -m w2v.bin.make_corpus --layout librispeech --out download --size tiny --unlabeled-minutes 10

Writes ``<out>/LibriSpeech/{train-clean-100,dev-clean,test-clean}/...`` or
``<out>/data_aishell/{wav,transcript}/...``; the recipes then run on it exactly as on the real corpus.
Sizes (speech in train/dev/test): tiny 2.5/0.5/0.7 min, mini 25/2.5/3 min, small 6 h/10/10 min.
``--unlabeled-minutes M`` adds an audio-only part for self-supervised pretraining, by new speakers
(twice as many per minute as train) and with no transcript: ``<out>/LibriSpeech/unlabeled/<spk>/
<chapter>/<utt>.flac`` or ``<out>/data_aishell/wav/unlabeled/<spk>/<utt>.wav``; prepare it with
``w2v.bin.prepare_unlabeled``. The other parts are the same with or without it.
A rerun with the same options does nothing; a different corpus already at the destination is an
error (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import sys

from w2v.data.synth import LAYOUTS, SIZES, CorpusExistsError, make_corpus, make_spec
from w2v.utils import setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", required=True, help=f"one of {sorted(LAYOUTS)}")
    p.add_argument("--out", required=True, help="directory that will hold LibriSpeech/ or data_aishell/")
    p.add_argument("--size", default="mini", help=f"one of {sorted(SIZES)} (default mini)")
    p.add_argument("--minutes", type=float, default=None, help="total minutes of speech; overrides --size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unlabeled-minutes", type=float, default=0.0,
                   help="minutes of an extra audio-only part (no transcripts) for pretraining; 0: none")
    args = p.parse_args(argv)
    setup_logging()
    try:
        spec = make_spec(args.layout, args.size, args.seed, args.minutes, args.unlabeled_minutes)
        root = make_corpus(args.out, spec)
    except (ValueError, CorpusExistsError) as e:
        print(f"make_corpus: error: {e}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
