"""Compute 80-dim fbank for lhotse manifests into lhotse feature storage.

Usage:
  python -m w2v.bin.compute_fbank --manifest-dir data/manifests --prefix librispeech \\
      --parts train-clean-100 dev-clean test-clean --out-dir data/fbank \\
      [--speed-perturb true] --nj 2

Reads data/manifests/<prefix>_{recordings,supervisions}_<part>.jsonl.gz, writes
data/fbank/<prefix>_cuts_<part>.jsonl.gz (+ <prefix>_feats_<part>/). Speed perturbation
(0.9, 1.1) applies to train* parts only. Parts whose cuts manifest exists are skipped; cuts
whose audio fails to load are reported and dropped.
"""

from __future__ import annotations

import argparse

from w2v.features.fbank import compute_fbank_for_parts
from w2v.utils import setup_logging, str2bool



def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest-dir", required=True)
    p.add_argument("--prefix", required=True, help="corpus name: librispeech, aishell")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--speed-perturb", type=str2bool, default=False)
    p.add_argument("--nj", type=int, default=1, help="worker processes")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    a = get_parser().parse_args(argv)
    compute_fbank_for_parts(a.manifest_dir, a.prefix, a.parts, a.out_dir, a.speed_perturb, a.nj)


if __name__ == "__main__":
    main()
