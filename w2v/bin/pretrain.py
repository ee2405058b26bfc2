"""Self-supervised pretraining of a wav2vec-family encoder on lhotse cuts of raw audio.

Usage:
  python -m w2v.bin.pretrain --ssl-model wav2vec2 --size tiny \\
      --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \\
      --exp-dir exp/ssl_wav2vec2 --num-steps 2000 --max-duration 60 --accum-grad 2
  # families:        --ssl-model {wav2vec,vq_wav2vec,wav2vec2,data2vec,hubert,wavlm}
  # vq-wav2vec:      ... --ssl-model vq_wav2vec --vq-quantizer kmeans
  # HuBERT / WavLM:  ... --num-clusters 100  (MFCC k-means fitted first, saved as exp_dir/kmeans.pt)
  # HuBERT iter. 2:  ... --num-clusters 500 --label-checkpoint exp/ssl_hubert/checkpoint-N.pt --label-layer 6
  # objective knobs: ... --objective '{"num_negatives": 50}' --encoder '{"layerdrop": 0.0}'
  # tiny wav2vec 2.0 from scratch on CPU (presets: w2v.ssl.train.TINY_WAV2VEC2_*; contrastive loss
  # leaves ln 101 = 4.615 after ~150 updates):
  #   OMP_NUM_THREADS=1 python -m w2v.bin.pretrain --ssl-model wav2vec2 --size tiny --cuts CUTS \
  #       --exp-dir exp/ssl_tiny --num-steps 600 --max-duration 24 --crop-seconds 3
  # the CPU size: 4 x 128 on log-mels (presets: w2v.ssl.train.SMALL_*); HuBERT's masked accuracy
  # reaches 0.24 in 4000 updates (16 min on 2 cores):
  #   python -m w2v.bin.pretrain --ssl-model hubert --size small --cuts CUTS --exp-dir exp/ssl_hubert \
  #       --num-steps 4000 --max-duration 24 --crop-seconds 3
  # 2 processes:     torchrun --nproc_per_node 2 -m w2v.bin.pretrain ...   (gloo on CPU, nccl on GPUs)
  # resume:          rerun the same command; it continues from the newest exp_dir/checkpoint-*.pt

Writes exp_dir/checkpoint-<step>.pt (the encoder under "model"/"config"/"kind", loadable by
w2v.models.load_pretrained), exp_dir/config.json and exp_dir/tensorboard/.
"""

from __future__ import annotations

import argparse
import json
import sys

from w2v.ssl.train import SSL_MODELS, SSL_SIZES, PretrainConfig, pretrain
from w2v.runtime.context import end_process_group
from w2v.utils import setup_logging, str2bool



def get_parser() -> argparse.ArgumentParser:
    d = PretrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ssl-model", choices=SSL_MODELS, required=True)
    p.add_argument("--size", default=d.size, choices=SSL_SIZES,
                   help="tiny: 2 x 64 on a 64-channel CNN (tests); small: 4 x 128 on log-mels, what 2 CPU "
                        "cores pretrain in 20 min; base, large: the papers' (not fairseq's wav2vec_small.pt, "
                        "which is BASE)")
    p.add_argument("--cuts", nargs="+", required=True, help="lhotse cut manifests (raw audio is loaded)")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--num-steps", type=int, default=d.num_steps, help="optimizer updates")
    p.add_argument("--max-duration", type=float, default=d.max_duration, help="seconds of cropped audio per batch and rank")
    p.add_argument("--crop-seconds", type=float, default=d.crop_seconds, help="random crop of longer utterances (0: none)")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds)
    p.add_argument("--accum-grad", type=int, default=d.accum_grad)
    p.add_argument("--lr", type=float, default=d.lr,
                   help="peak learning rate (default: 5e-4; 2e-3 at --size small; 5e-3 for --ssl-model wav2vec2 --size tiny)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="-1: 8%% of --num-steps")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-buckets", type=int, default=d.num_buckets)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--log-interval", type=int, default=d.log_interval)
    p.add_argument("--save-every", type=int, default=d.save_every, help="checkpoint every N updates")
    p.add_argument("--keep-last", type=int, default=d.keep_last)
    p.add_argument("--tensorboard", type=str2bool, default=d.tensorboard)
    p.add_argument("--progress", type=str2bool, default=d.progress and sys.stderr.isatty())
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--bf16", type=str2bool, default=d.bf16, help="forward + loss under bf16 autocast")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default=d.amp,
                   help="mixed precision (fp16: CUDA, with a gradient scaler); --bf16 true is --amp bf16")
    p.add_argument("--vq-quantizer", choices=["gumbel", "kmeans"], default=d.vq_quantizer)
    p.add_argument("--num-clusters", type=int, default=d.num_clusters)
    p.add_argument("--kmeans", dest="kmeans_path", default=None, help="existing k-means centroids (HuBERT/WavLM)")
    p.add_argument("--kmeans-max-cuts", type=int, default=d.kmeans_max_cuts)
    p.add_argument("--label-checkpoint", default=None,
                   help="HuBERT/WavLM iteration 2: cluster a layer of this checkpoint instead of MFCC")
    p.add_argument("--label-layer", type=int, default=d.label_layer, help="1-based block index (6 in the paper)")
    p.add_argument("--objective", type=json.loads, default={}, help="JSON overrides of the objective config")
    p.add_argument("--encoder", type=json.loads, default={}, help="JSON overrides of the encoder config")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    values = vars(args)
    values["crop_seconds"] = values["crop_seconds"] or None
    values["objective_overrides"] = values.pop("objective")
    values["encoder_overrides"] = values.pop("encoder")
    result = pretrain(PretrainConfig(**values))
    end_process_group()
    if result.history and result.last_checkpoint is not None:  # rank 0
        first, last = result.history[0], result.history[-1]
        print(f"step {first['step']}: loss {first['loss']:.4f}; step {last['step']}: loss {last['loss']:.4f}; "
              f"checkpoint {result.last_checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
