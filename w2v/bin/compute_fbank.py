"""Compute 80-dim fbank for lhotse manifests into lhotse feature storage.

Usage:
  python -m w2v.bin.compute_fbank --manifest-dir data/manifests --prefix librispeech \\
      --parts train-clean-100 dev-clean test-clean --out-dir data/fbank \\
      [--speed-perturb true] --nj 2 [--shard I/N] [--merge-only true]

Reads data/manifests/<prefix>_{recordings,supervisions}_<part>.jsonl.gz, writes
data/fbank/<prefix>_cuts_<part>.jsonl.gz (+ <prefix>_feats_<part>/). Speed perturbation
(0.9, 1.1) applies to train* parts only. Parts whose cuts manifest exists are skipped; cuts
whose audio fails to load are reported and dropped.

Several machines: run shard I of N (0-based) on each (--shard I/N; default RANK/WORLD_SIZE when
set, e.g. under torchrun, else 0/1), all with the same --out-dir; each computes its chunks of every
part, and whichever finishes last writes the part's manifest. --merge-only true writes the
manifests from the shards' chunks, naming any shard that has not finished.
"""

from __future__ import annotations

import argparse

from w2v.features.fbank import compute_fbank_for_parts, merge_fbank_part
from w2v.features.parts import Shard
from w2v.utils import setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest-dir", required=True)
    p.add_argument("--prefix", required=True, help="corpus name: librispeech, aishell")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--speed-perturb", type=str2bool, default=False)
    p.add_argument("--nj", type=int, default=1, help="worker processes")
    p.add_argument("--shard", type=Shard.parse, default=None,
                   help="I/N: this machine's shard (0-based); default RANK/WORLD_SIZE, else 0/1")
    p.add_argument("--merge-only", type=str2bool, default=False,
                   help="write the parts' manifests from the shards' chunks; compute nothing")
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    a = get_parser().parse_args(argv)
    if a.merge_only:
        for part in a.parts:
            merge_fbank_part(a.out_dir, a.prefix, part)
        return
    shard = a.shard or Shard.from_env()
    compute_fbank_for_parts(a.manifest_dir, a.prefix, a.parts, a.out_dir, a.speed_perturb, a.nj, shard)


if __name__ == "__main__":
    main()
