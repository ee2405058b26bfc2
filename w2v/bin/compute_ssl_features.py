"""Extract one layer of a pretrained wav2vec-family encoder as features for the CTC recipe.

Usage:
  python -m w2v.bin.compute_ssl_features --checkpoint exp/ssl_wav2vec2 --layer 2 \\
      --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \\
             data/fbank/librispeech_cuts_test-clean.jsonl.gz \\
      --out-dir data/ssl/ssl_wav2vec2_L2 [--bf16 true] [--storage numpy|lilcom] [--device cpu]

--checkpoint: a fairseq .pt, a Hugging Face model directory, a checkpoint of this project, or a
pretraining exp dir (its newest checkpoint-N.pt). Each input cuts manifest gives
out_dir/<same name> (its recordings and supervisions, SSL features instead of fbank); a part whose
manifest exists is skipped, and out_dir/ssl_features.json refuses features of another checkpoint,
layer or precision in the same directory.
"""

from __future__ import annotations

import argparse
import sys

import torch

from w2v.features.ssl import STORAGES, SslFeatureExtractor, compute_ssl_features_for_part
from w2v.utils import setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--layer", type=int, required=True, help="1-based Transformer block")
    p.add_argument("--cuts", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--bf16", type=str2bool, default=False, help="encoder under bf16 autocast")
    p.add_argument("--storage", choices=STORAGES, default="numpy")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--progress", type=str2bool, default=sys.stderr.isatty())
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    a = get_parser().parse_args(argv)
    extractor = SslFeatureExtractor(a.checkpoint, a.layer, a.bf16, a.device)
    for cuts in a.cuts:
        compute_ssl_features_for_part(cuts, a.out_dir, extractor, a.storage, a.progress)


if __name__ == "__main__":
    main()
