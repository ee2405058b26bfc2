"""Extract one layer of a pretrained wav2vec-family encoder as features for the CTC recipe.

Usage:
  python -m w2v.bin.compute_ssl_features --checkpoint exp/ssl_wav2vec2 --layer 2 \\
      --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \\
             data/fbank/librispeech_cuts_test-clean.jsonl.gz \\
      --out-dir data/ssl/ssl_wav2vec2_L2 [--bf16 true] [--storage numpy|lilcom] [--device cpu] \\
      [--batch-duration 100] [--max-segment-seconds 30] [--nj 1] [--shard I/N] [--merge-only true]

--checkpoint: a fairseq .pt, a Hugging Face model directory, a checkpoint of this project, or a
pretraining exp dir (its newest checkpoint-N.pt). Each input cuts manifest gives
out_dir/<same name> (its recordings and supervisions, SSL features instead of fbank); a part whose
manifest exists is skipped, and out_dir/ssl_features.json refuses features of another checkpoint,
layer, precision or windowing in the same directory.

Cuts are encoded in length-sorted padded batches: --batch-duration seconds of padded audio,
--max-batch-cuts cuts and --max-padding of it padding at most. Recordings longer than
--max-segment-seconds are encoded in windows with --context-seconds of context on each side.
--nj N runs N processes (CPU: the cores shared out; --device cuda: one per visible GPU in turn).
Several machines: run shard I of N (0-based) on each (--shard I/N; default RANK/WORLD_SIZE when
set, e.g. under torchrun, else 0/1), all with the same --out-dir; whichever finishes last writes
each part's manifest, or --merge-only true does, naming any shard that has not finished.
"""

from __future__ import annotations

import argparse
import sys

import torch

from w2v.features.parts import Shard
from w2v.features.ssl import (
    CONTEXT_SECONDS,
    MAX_SEGMENT_SECONDS,
    STORAGES,
    BatchLimits,
    ExtractorOptions,
    compute_ssl_features_for_parts,
    SslFeatureExtractor,
    merge_ssl_part,
)
from w2v.utils import setup_logging, str2bool


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="required unless --merge-only")
    p.add_argument("--layer", type=int, help="1-based Transformer block; required unless --merge-only")
    p.add_argument("--cuts", nargs="+", default=[], help="required unless --print-num-layers")
    p.add_argument("--out-dir", help="required unless --print-num-layers")
    p.add_argument("--bf16", type=str2bool, default=False, help="encoder under bf16 autocast")
    p.add_argument("--storage", choices=STORAGES, default="numpy")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when there is one), cpu, cuda (workers spread over the visible GPUs) or cuda:N")
    p.add_argument("--batch-duration", type=float, default=BatchLimits.seconds,
                   help="seconds of padded audio per encoder batch; 0: one cut at a time")
    p.add_argument("--max-batch-cuts", type=int, default=BatchLimits.cuts, help="0: no limit")
    p.add_argument("--max-padding", type=float, default=BatchLimits.padding,
                   help="largest fraction of a batch's padded audio that may be padding")
    p.add_argument("--max-segment-seconds", type=float, default=MAX_SEGMENT_SECONDS,
                   help="longer recordings are encoded in windows; 0: never split")
    p.add_argument("--context-seconds", type=float, default=CONTEXT_SECONDS,
                   help="context on each side of a window, dropped when joining")
    p.add_argument("--nj", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--shard", type=Shard.parse, default=None,
                   help="I/N: this machine's shard (0-based); default RANK/WORLD_SIZE, else 0/1")
    p.add_argument("--print-num-layers", type=str2bool, default=False,
                   help="print how many layers --checkpoint has and stop (a layer probe's 'all')")
    p.add_argument("--merge-only", type=str2bool, default=False,
                   help="write the parts' manifests from the shards' chunks; compute nothing")
    p.add_argument("--progress", type=str2bool, default=sys.stderr.isatty())
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    parser = get_parser()
    a = parser.parse_args(argv)
    if a.merge_only:
        if not a.cuts or a.out_dir is None:
            parser.error("--merge-only needs --cuts and --out-dir")
        for cuts in a.cuts:
            merge_ssl_part(cuts, a.out_dir)
        return
    if a.print_num_layers:
        if a.checkpoint is None:
            parser.error("--print-num-layers needs --checkpoint")
        print(SslFeatureExtractor(a.checkpoint, layer=1).num_layers)
        return
    if a.checkpoint is None or a.layer is None or not a.cuts or a.out_dir is None:
        parser.error("--checkpoint, --layer, --cuts and --out-dir are required (unless --merge-only true)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    options = ExtractorOptions(a.checkpoint, a.layer, a.bf16, device, a.max_segment_seconds, a.context_seconds)
    compute_ssl_features_for_parts(
        a.cuts, a.out_dir, options, a.storage, BatchLimits(a.batch_duration, a.max_batch_cuts, a.max_padding),
        a.shard or Shard.from_env(), a.nj, a.progress,
    )


if __name__ == "__main__":
    main()
