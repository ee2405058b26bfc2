"""Select a label budget (10 min / 1 h / 10 h of transcribed audio) from training cuts.

Usage:
  # speaker-balanced, seeded; for one seed the 10m subset lies inside the 1h one
  python -m w2v.bin.subset_cuts --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \
      --budget 10m --seed 0 --out data/fbank/librispeech_cuts_train-10m.jsonl.gz
  # the official Libri-light split (wav2vec 2.0's fine-tuning sets); --seed is not used
  python -m w2v.bin.subset_cuts --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \
      data/fbank/librispeech_cuts_train-other-500.jsonl.gz --budget 1h \
      --librilight-dir download/librispeech_finetuning --out data/fbank/librispeech_cuts_train-ll1h.jsonl.gz

--budget: 10m, 1h, 10h, any <N>m / <N>h, a bare number of minutes, or all. The subset keeps the
input order and is written atomically (see w2v.data.subset).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lhotse import CutSet

from w2v.data.subset import parse_budget, select_budget, select_librilight, speaker_of
from w2v.features.parts import save_cuts
from w2v.utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", nargs="+", required=True, help="cuts manifests to select from (combined)")
    p.add_argument("--budget", required=True, help="10m, 1h, 10h, <N>m, <N>h, minutes, or all")
    p.add_argument("--seed", type=int, default=0, help="picks the speaker-balanced order")
    p.add_argument("--out", type=Path, required=True, help="cuts manifest to write (.jsonl.gz)")
    p.add_argument("--librilight-dir", type=Path, default=None,
                   help="librispeech_finetuning/: take its official 10m/1h/10h list instead")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    cuts = CutSet.from_cuts([cut for path in args.cuts for cut in CutSet.from_file(path)])
    if args.librilight_dir is not None:
        subset = select_librilight(cuts, args.librilight_dir, args.budget)
    else:
        subset = select_budget(cuts, parse_budget(args.budget), args.seed)
    save_cuts(subset, args.out)
    minutes = sum(cut.duration for cut in subset) / 60
    speakers = len({speaker_of(cut) for cut in subset})
    logging.info("Budget %s: %d of %d cuts, %d speakers, %.1f min -> %s",
                 args.budget, len(subset), len(cuts), speakers, minutes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
