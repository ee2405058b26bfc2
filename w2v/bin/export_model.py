"""Export the average of a run's last epochs as one model-only checkpoint (for decoding, sharing).

Usage:
  python -m w2v.bin.export_model --exp-dir exp/ctc_fbank --epoch 25 --avg 3 \\
      --out exp/ctc_fbank/pretrained-epoch-25-avg-3.pt

Averages epoch-23.pt .. epoch-25.pt (every floating tensor; the config must agree) and writes
{"model", "config", "kind", "epoch", "avg", "averaged_from"} without optimizer state. Decode it
with `python -m w2v.bin.decode --checkpoint FILE ...`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from w2v.asr.checkpoint import export_averaged
from w2v.utils import setup_logging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    setup_logging()
    out = export_averaged(args.exp_dir, args.epoch, args.avg, args.out)
    logging.info("wrote %s (%.1f MB): epochs %d..%d averaged", out, out.stat().st_size / 1e6,
                 args.epoch - args.avg + 1, args.epoch)


if __name__ == "__main__":
    main()
