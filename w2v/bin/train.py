"""Train a CTC conformer on precomputed fbank cuts (k2 CTC loss), one process or DDP.

Usage:
  python -m w2v.bin.train --exp-dir exp/ctc_fbank --lang-dir data/lang_bpe_500 \\
      --train-cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \\
      --dev-cuts data/fbank/librispeech_cuts_dev-clean.jsonl.gz \\
      --num-epochs 20 --start-epoch 1 --max-duration 200 --feature-type fbank
  # resume:                      rerun the same command (after the newest epoch-N.pt that loads)
  # resume after epoch 5 exactly: ... --start-epoch 6;  start anew: ... --start-epoch 1
  # 2 processes (gloo, CPU):      torchrun --nproc_per_node 2 -m w2v.bin.train ...
  # 8 GPUs, 2 nodes, bf16:         torchrun --nnodes 2 --node-rank R --master-addr H --master-port P \
  #                                  --nproc_per_node 4 -m w2v.bin.train ... --device cuda --amp bf16
  # model size:                   ... --model-size large  (or single values: --d-model 144 --num-layers 4)
  # SSL front end on the audio:   ... --ssl-checkpoint exp/ssl_wav2vec2 --ssl-layer 0 [--ssl-finetune true]

Writes exp_dir/epoch-N.pt every epoch (the last --keep-last-k kept), exp_dir/config.yaml and
exp_dir/tensorboard/.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from w2v.asr.model import MODEL_SIZES, AsrConfig, model_config
from w2v.asr.train import TrainConfig, train
from w2v.runtime.context import end_process_group
from w2v.utils import setup_logging, str2bool



def _epochs(value: str) -> int:
    return 0 if value == "auto" else int(value)


def get_parser() -> argparse.ArgumentParser:
    t = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", default=t.exp_dir)
    p.add_argument("--lang-dir", default=t.lang_dir)
    p.add_argument("--train-cuts", nargs="+", required=True)
    p.add_argument("--dev-cuts", nargs="*", default=[])
    p.add_argument("--token-type", choices=["bpe", "char"], default=t.token_type)
    p.add_argument("--feature-type", default=t.feature_type,
                   help="name of the features in the cuts (fbank, or the SSL feature tag); "
                        "goes into config.yaml and the reports")
    p.add_argument("--num-epochs", type=_epochs, default=t.num_epochs,
                   help="N, or auto (0): until the smoothed dev loss stops improving for --patience epochs "
                        "and --patience-updates updates")
    p.add_argument("--max-epochs", type=int, default=t.max_epochs, help="the cap of --num-epochs auto")
    p.add_argument("--patience", type=int, default=t.patience,
                   help="--num-epochs auto stops after this many epochs without a better dev loss")
    p.add_argument("--patience-updates", type=int, default=t.patience_updates,
                   help="... and at least this many updates (small label budgets: more epochs)")
    p.add_argument("--start-epoch", type=int, default=t.start_epoch,
                   help="0: after the newest exp_dir/epoch-N.pt that loads; 1: anew; N: from epoch-(N-1).pt")
    p.add_argument("--keep-last-k", type=int, default=t.keep_last_k,
                   help="keep only the newest k epoch-N.pt and checkpoint-<step>.pt (0: all)")
    p.add_argument("--save-every-n", type=int, default=t.save_every_n,
                   help="also write checkpoint-<step>.pt every N updates (resumes inside the epoch)")
    p.add_argument("--device", default=t.device, help="auto | cpu | cuda | cuda:N (auto: cuda:LOCAL_RANK when there is one)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default=t.amp,
                   help="mixed precision of the forward pass (fp16: CUDA, with a gradient scaler)")
    p.add_argument("--max-duration", type=float, default=t.max_duration,
                   help="seconds of audio per batch and rank")
    p.add_argument("--num-buckets", type=int, default=t.num_buckets)
    p.add_argument("--spec-augment", type=str2bool, default=t.spec_augment)
    p.add_argument("--lr", type=float, default=t.lr, help="peak learning rate (after warmup)")
    p.add_argument("--warmup-steps", type=int, default=t.warmup_steps)
    p.add_argument("--warmup-epochs", type=float, default=t.warmup_epochs,
                   help="warm-up lasts --warmup-steps updates, at most this many epochs of them")
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--grad-clip", type=float, default=t.grad_clip)
    p.add_argument("--max-nonfinite-batches", type=int, default=t.max_nonfinite_batches,
                   help="stop after this many batches in a row with a non-finite loss or gradient (0: never)")
    p.add_argument("--ctc-impl", choices=["k2", "torch"], default=t.ctc_impl)
    p.add_argument("--ctc-weight", type=float, default=t.ctc_weight,
                   help="with --num-decoder-layers > 0: weight of CTC against the attention decoder's loss")
    p.add_argument("--label-smoothing", type=float, default=t.label_smoothing)
    g = p.add_argument_group("on-the-fly SSL front end (instead of the cuts' features)")
    g.add_argument("--ssl-checkpoint", default=t.ssl_checkpoint,
                   help="fairseq .pt, HF dir, our checkpoint or pretraining exp dir")
    g.add_argument("--ssl-layer", type=int, default=t.ssl_layer, help="0 = learned weighted sum of all layers")
    g.add_argument("--ssl-finetune", type=str2bool, default=t.ssl_finetune,
                   help="train the Transformer too (the conv feature encoder stays frozen)")
    g.add_argument("--ssl-lr-scale", type=float, default=t.ssl_lr_scale, help="encoder lr = lr × this")
    g.add_argument("--ssl-bf16", type=str2bool, default=t.ssl_bf16, help="encoder under bf16 autocast")
    g.add_argument("--ssl-freeze-updates", type=int, default=t.ssl_freeze_updates,
                   help="a fine-tuned encoder stays frozen for the first N updates (fairseq: 10000 of 20000)")
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--num-workers", type=int, default=t.num_workers)
    p.add_argument("--max-batches-per-epoch", type=int, default=t.max_batches_per_epoch)
    p.add_argument("--log-batches", type=str2bool, default=t.log_batches)
    p.add_argument("--tensorboard", type=str2bool, default=t.tensorboard)
    # tqdm bars only on a terminal: in a log file they are one line per update
    p.add_argument("--progress", type=str2bool, default=t.progress and sys.stderr.isatty())
    m = AsrConfig()
    g = p.add_argument_group("model (ignored when resuming: the checkpoint's config is used)")
    g.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="demo",
                   help="preset: demo 2.2M, medium 32.8M (wenet AISHELL), large 80.3M (icefall LibriSpeech), "
                        "linear (fairseq/HF fine-tuning: a linear CTC head on the SSL encoder's frames); "
                        "the options below change single values of it")
    for f in fields(AsrConfig):
        if f.name in ("num_tokens", "feature_dim", "subsampling", "ssl"):  # from lang dir / cuts / --ssl-*
            continue
        kind = type(getattr(m, f.name))
        g.add_argument(f"--{f.name.replace('_', '-')}", type=str2bool if kind is bool else kind, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = vars(get_parser().parse_args(argv))
    model_names = {f.name for f in fields(AsrConfig)}
    size = args.pop("model_size")
    model_cfg = model_config(size, **{k: v for k, v in args.items() if k in model_names and v is not None})
    train_cfg = TrainConfig(**{k: v for k, v in args.items() if k not in model_names})
    result = train(train_cfg, model_cfg)
    end_process_group()
    h = result.history
    if h["epoch"]:
        logging.info(f"done: epoch {h['epoch'][-1]}, train loss {h['train_loss'][-1]:.4f}, "
                     f"dev loss {h['dev_loss'][-1]:.4f}, {sum(h['seconds']):.0f} s of training")


if __name__ == "__main__":
    main()
