"""CTC training loop: Adam + Noam warmup, grad clipping, per-epoch checkpoints, resume, DDP.

One process, or one per rank under ``torchrun --nproc_per_node K`` (gloo on CPU,
DistributedDataParallel; the lhotse sampler gives each rank a disjoint share of the batches, and
only rank 0 writes checkpoints, ``config.yaml`` and tensorboard logs).

Determinism: every epoch reseeds python/numpy/torch with ``seed + epoch`` and the sampler with
``set_epoch(epoch)``, so training epochs 1..N in one go equals 1..k, then ``--start-epoch k+1``
from ``epoch-k.pt`` (model, optimizer and scheduler states restored). Checkpoints are written at
epoch ends only, so the sampler's stored state is not needed to resume (``set_epoch`` reproduces
the order); it is kept in the checkpoint for inspection and future mid-epoch checkpoints.

Resume by default (``start_epoch=0``): after the newest ``epoch-N.pt`` that loads; the ones that
do not are named and skipped. Only the last ``keep_last_k`` epochs are kept.

Non-finite losses: a cut whose CTC loss is inf or nan is left out of the update and named in the
log; an update whose gradient norm is not finite is skipped. ``max_nonfinite_batches`` batches in
a row with either stop the run with a message (the model has diverged, or the data is broken).

CTC loss: k2 (``k2.ctc_loss`` over a ``DenseFsaVec``, the topology the decoders use); torch's
agrees to 4e-8 relative and is not measurably faster within a step (numbers in ``ctc.py``);
``ctc_impl="torch"`` switches.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from lhotse import CutSet
from lhotse.utils import compute_num_frames
from torch import nn

from w2v.asr.ctc import ctc_loss
from w2v.asr.frontend import ENCODER_PREFIX, checkpoint_state, load_model_state
from w2v.asr.data import cut_text, make_dataloader
from w2v.asr.model import (
    KIND,
    AsrConfig,
    build_model,
    num_parameters,
    subsampled_lengths,
    subsampling_for,
)
from w2v.asr.tokens import Tokenizer
from w2v.runtime.checkpoints import checkpoint_path, keep_last, newest_loadable, remove_stale_temporaries
from w2v.serialization import load as load_file
from w2v.utils import atomic_torch_save, atomic_write_text, seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything about a training run except the model (that is :class:`AsrConfig`)."""

    exp_dir: str = "exp/ctc_fbank"
    lang_dir: str = "data/lang_bpe_500"
    train_cuts: list[str] = field(default_factory=list)
    dev_cuts: list[str] = field(default_factory=list)
    token_type: str = "bpe"
    feature_type: str = "fbank"
    num_epochs: int = 30
    # 0: after the newest epoch-N.pt that loads (1 when there is none); N > 1: from epoch-(N-1).pt
    start_epoch: int = 0
    # Keep only the newest k epoch-N.pt (0 = all); decoding averages the last few.
    keep_last_k: int = 0
    max_duration: float = 200.0
    num_buckets: int = 10
    spec_augment: bool = True
    # lr and warmup tuned on the synthetic mini corpus (25 epochs, 30 s batches, SpecAugment)
    lr: float = 2e-3
    warmup_steps: int = 300
    weight_decay: float = 1e-6
    grad_clip: float = 5.0
    # Stop after this many batches in a row with a non-finite CTC loss or gradient.
    max_nonfinite_batches: int = 20
    ctc_impl: str = "k2"
    seed: int = 42
    num_workers: int = 0
    # Development / tests: stop an epoch after this many batches (0 = no limit).
    max_batches_per_epoch: int = 0
    # On-the-fly SSL front end instead of the cuts' features (w2v/asr/frontend.py): a checkpoint
    # (file, HF dir or pretraining exp dir), its layer (0 = learned weighted sum of all layers),
    # whether the Transformer trains (at lr × ssl_lr_scale), bf16 autocast for the encoder.
    ssl_checkpoint: str = ""
    ssl_layer: int = 0
    ssl_finetune: bool = False
    ssl_lr_scale: float = 0.1
    ssl_bf16: bool = False
    # Append the cut ids of every batch, per rank, to ``exp_dir/batches.rank<r>.txt``.
    log_batches: bool = False
    tensorboard: bool = True
    progress: bool = True


def noam_factor(step: int, warmup: int) -> float:
    """Linear warmup to 1 at ``warmup`` steps, then ``sqrt(warmup / step)`` decay (step ≥ 1)."""
    step = max(step, 1)
    return min(step / warmup, math.sqrt(warmup / step))


def load_cuts(paths: Sequence[str]) -> CutSet:
    """Eagerly concatenated cuts of several manifests (the mini corpora fit in memory)."""
    if not paths:
        raise ValueError("No cut manifests given")
    cuts = [c for p in paths for c in CutSet.from_file(p)]
    return CutSet.from_cuts(cuts)


def feature_shape(cuts: CutSet, source: str) -> tuple[int, float]:
    """(feature dim, frame shift) shared by every cut; raises naming ``source`` otherwise."""
    shapes = {}
    for cut in cuts:
        if not cut.has_features:
            raise ValueError(f"{source}: cut {cut.id} has no features (run the feature stage)")
        shapes.setdefault((cut.num_features, round(cut.frame_shift, 6)), cut.id)
    if len(shapes) != 1:
        raise ValueError(
            f"{source}: cuts mix feature shapes (dim, frame shift): "
            + ", ".join(f"{k} e.g. {v}" for k, v in shapes.items())
        )
    return next(iter(shapes))


def keep_trainable(cuts: CutSet, tokenizer: Tokenizer, subsampling: int = 4,
                   frame_shift: Optional[float] = None) -> CutSet:
    """Drop cuts whose output frames cannot hold their tokens (CTC would be infinite).

    Input frames are the cuts' features, or with ``frame_shift`` (audio input) counted from
    the duration."""

    def ok(cut) -> bool:
        frames = cut.num_frames if frame_shift is None else compute_num_frames(cut.duration, frame_shift, 16000)
        n_out = int(subsampled_lengths(torch.tensor(frames), subsampling))
        return n_out >= len(tokenizer.encode([cut_text(cut)])[0]) > 0

    kept = cuts.filter(ok).to_eager()
    dropped = len(cuts) - len(kept)
    if dropped:
        log.warning("Dropped %d of %d cuts: too short for their transcript", dropped, len(cuts))
    return kept


def _distributed() -> tuple[int, int]:
    """(world_size, rank); initialises the gloo group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@dataclass
class BatchLoss:
    loss: torch.Tensor  # to back-propagate: summed finite CTC / frames
    total: float  # summed finite CTC
    frames: int  # output frames of the cuts with a finite loss
    nonfinite: list[str]  # ids of the cuts whose loss is inf or nan


def _batch_loss(model: nn.Module, batch: dict, tokenizer: Tokenizer, impl: str) -> BatchLoss:
    log_probs, out_lens = model(batch["features"], batch["feature_lens"])
    targets = tokenizer.encode(batch["texts"])
    losses = ctc_loss(log_probs, out_lens, targets, impl)
    finite = torch.isfinite(losses)
    frames = int(out_lens[finite].sum())
    total = losses[finite].sum()
    # Keep every parameter in the graph even when nothing is finite (DDP expects all gradients).
    loss = total / max(frames, 1) + 0.0 * log_probs.sum()
    bad = [cid for cid, ok in zip(batch["cut_ids"], finite.tolist()) if not ok]
    return BatchLoss(loss, float(total.detach()), frames, bad)


class NonFiniteGuard:
    """Counts batches with a non-finite loss or gradient; too many in a row raise."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.cuts, self.updates_skipped = limit, 0, 0, 0

    def check(self, epoch: int, i: int, bad_cuts: list[str], grad_norm: float) -> bool:
        """Log what was non-finite in batch ``i``; returns whether to apply the update."""
        step_ok = math.isfinite(grad_norm)
        if bad_cuts:
            self.cuts += len(bad_cuts)
            log.warning("epoch %d batch %d: CTC loss is not finite for %d cut(s), left out: %s",
                        epoch, i, len(bad_cuts), " ".join(bad_cuts[:10]) + (" ..." if len(bad_cuts) > 10 else ""))
        if not step_ok:
            self.updates_skipped += 1
            log.warning("epoch %d batch %d: gradient norm is %s; update skipped", epoch, i, grad_norm)
        self.in_a_row = self.in_a_row + 1 if (bad_cuts or not step_ok) else 0
        if self.limit and self.in_a_row >= self.limit:
            raise RuntimeError(
                f"{self.in_a_row} batches in a row had a non-finite CTC loss or gradient (epoch {epoch}, "
                f"batch {i}; last cuts: {' '.join(bad_cuts[:10]) or 'all finite, gradient ' + str(grad_norm)}). "
                f"The model has diverged (try a lower --lr or more --warmup-steps) or these cuts cannot "
                f"be aligned to their transcripts; the last good checkpoint is kept"
            )
        return step_ok


def _all_reduce(values: list[float]) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def compute_dev_loss(model: nn.Module, loader, tokenizer: Tokenizer, impl: str) -> float:
    """CTC loss per output frame over the dev set (summed over ranks)."""
    model.eval()
    total, frames = 0.0, 0
    for batch in loader:
        b = _batch_loss(model, batch, tokenizer, impl)
        total += b.total
        frames += b.frames
    model.train()
    total, frames = _all_reduce([total, float(frames)])
    return total / max(frames, 1.0)


def write_config_yaml(path: Path, model_cfg: AsrConfig, train_cfg: TrainConfig) -> None:
    import yaml

    atomic_write_text(
        path,
        yaml.safe_dump({"kind": KIND, "model": asdict(model_cfg), "train": asdict(train_cfg)},
                       sort_keys=False),
    )


def find_resume(exp_dir: Path, start_epoch: int) -> tuple[int, dict | None, Path | None]:
    """(first epoch to train, the checkpoint to resume from, its path).

    ``start_epoch`` 0 resumes after the newest ``epoch-N.pt`` that loads, 1 starts anew, N > 1
    resumes from ``epoch-(N-1).pt`` (which must load).
    """
    def read(path: Path) -> dict:
        ckpt = load_file(path)
        if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
            raise ValueError(f"{path}: kind {ckpt.get('kind') if isinstance(ckpt, dict) else None!r} is not {KIND!r}")
        return ckpt

    if start_epoch == 0:
        found = newest_loadable(exp_dir, read)
        if found is None:
            return 1, None, None
        n, path, ckpt = found
        log.info("resuming after %s", path)
        return n + 1, ckpt, path
    if start_epoch == 1:
        return 1, None, None
    path = checkpoint_path(exp_dir, start_epoch - 1)
    if not path.is_file():
        raise FileNotFoundError(f"--start-epoch {start_epoch} needs {path}")
    return start_epoch, read(path), path


@dataclass
class TrainResult:
    """The trained model (unwrapped from DDP, train mode; None when there was nothing to train)
    and per-epoch history of this run."""

    model: Optional[nn.Module]
    config: AsrConfig
    history: dict


def train(train_cfg: TrainConfig, model_cfg: AsrConfig) -> TrainResult:
    """Train epochs ``start_epoch..num_epochs``; history has ``epoch``, ``train_loss``,
    ``dev_loss`` (CTC per output frame) and ``seconds`` per epoch.

    ``model_cfg.num_tokens`` is replaced by the lang dir's token count, ``feature_dim`` and
    ``subsampling`` by what the training cuts hold (40 ms output frames: ×4 for 10 ms fbank, ×2
    for 20 ms SSL features). When resuming, the model config is the one stored in
    ``epoch-(start_epoch-1).pt`` and the cuts must match it.
    """
    world_size, rank = _distributed()
    exp_dir = Path(train_cfg.exp_dir)
    tokenizer = Tokenizer(train_cfg.lang_dir, train_cfg.token_type)

    if rank == 0:
        remove_stale_temporaries(exp_dir)
    start_epoch, resume, resume_path = find_resume(exp_dir, train_cfg.start_epoch)
    if start_epoch > train_cfg.num_epochs:
        log.info("%s already holds epoch-%d.pt: nothing to train for --num-epochs %d",
                 exp_dir, start_epoch - 1, train_cfg.num_epochs)
        if rank == 0:
            keep_last(exp_dir, train_cfg.keep_last_k)
        return TrainResult(model=None, config=AsrConfig.from_dict(resume["config"]),
                           history={"epoch": [], "train_loss": [], "dev_loss": [], "seconds": []})
    if resume is not None:
        model_cfg = AsrConfig.from_dict(resume["config"])
    train_cuts = load_cuts(train_cfg.train_cuts)
    source = " ".join(train_cfg.train_cuts)
    encoder_state = None
    if resume is None and train_cfg.ssl_checkpoint:
        from w2v.asr.frontend import make_spec

        spec, encoder_state = make_spec(train_cfg.ssl_checkpoint, train_cfg.ssl_layer,
                                        train_cfg.ssl_finetune, train_cfg.ssl_bf16)
        feature_dim, frame_shift = spec["feature_dim"], spec["frame_shift"]
        model_cfg = AsrConfig.from_dict({**asdict(model_cfg), "ssl": spec})
    elif resume is not None and model_cfg.ssl is not None:
        feature_dim, frame_shift = model_cfg.ssl["feature_dim"], model_cfg.ssl["frame_shift"]
    else:
        feature_dim, frame_shift = feature_shape(train_cuts, source)
    if resume is None:
        model_cfg = AsrConfig.from_dict({
            **asdict(model_cfg), "num_tokens": tokenizer.num_tokens,
            "feature_dim": feature_dim, "subsampling": subsampling_for(frame_shift),
        })
    elif (feature_dim, subsampling_for(frame_shift)) != (model_cfg.feature_dim, model_cfg.subsampling):
        raise ValueError(
            f"{source}: {feature_dim}-dim features at {frame_shift * 1000:g} ms, but the model in "
            f"{resume_path} takes {model_cfg.feature_dim}-dim "
            f"features subsampled ×{model_cfg.subsampling}"
        )
    if model_cfg.num_tokens != tokenizer.num_tokens:
        raise ValueError(
            f"Model has {model_cfg.num_tokens} outputs but {train_cfg.lang_dir} has "
            f"{tokenizer.num_tokens} tokens"
        )

    seed_everything(train_cfg.seed)
    model = build_model(model_cfg)
    encoder_params = [p for n, p in model.named_parameters()
                      if n.startswith(ENCODER_PREFIX) and p.requires_grad]
    encoder_ids = {id(p) for p in encoder_params}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]}]
    if encoder_params:  # a fine-tuned SSL encoder moves slower than the layers on top
        groups.append({"params": encoder_params, "lr": train_cfg.lr * train_cfg.ssl_lr_scale})
    optimizer = torch.optim.Adam(
        groups, lr=train_cfg.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=train_cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: noam_factor(step, train_cfg.warmup_steps)
    )
    if encoder_state is not None:
        model.frontend.encoder.load_state_dict(encoder_state)
    if not train_cfg.spec_augment:
        model.spec_augment = None
    if resume is not None:
        load_model_state(model, resume["model"], str(resume_path))
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
    ddp_model: nn.Module = model
    if world_size > 1:
        # A fine-tuned encoder has weights that a chosen layer never reaches (later blocks, the
        # mask embedding): DDP must not wait for their gradients.
        tuned = model_cfg.ssl is not None and model_cfg.ssl["finetune"]
        ddp_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=tuned)

    audio = model_cfg.ssl is not None
    train_cuts = keep_trainable(train_cuts, tokenizer, model_cfg.subsampling,
                                frame_shift if audio else None)
    train_dl = make_dataloader(
        train_cuts, train=True, max_duration=train_cfg.max_duration,
        num_buckets=train_cfg.num_buckets, spec_augment=train_cfg.spec_augment,
        world_size=world_size, rank=rank, num_workers=train_cfg.num_workers, seed=train_cfg.seed,
        audio=audio,
    )
    dev_dl = None
    if train_cfg.dev_cuts:
        dev_dl = make_dataloader(
            load_cuts(train_cfg.dev_cuts), train=False, max_duration=train_cfg.max_duration,
            world_size=world_size, rank=rank, num_workers=train_cfg.num_workers, audio=audio,
        )

    writer = None
    if rank == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_config_yaml(exp_dir / "config.yaml", model_cfg, train_cfg)
        log.info("Model %s: %.2fM parameters, %s", KIND, num_parameters(model) / 1e6, model_cfg)
        if train_cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(exp_dir / "tensorboard"))
    batch_log = None
    if train_cfg.log_batches:
        exp_dir.mkdir(parents=True, exist_ok=True)
        batch_log = open(exp_dir / f"batches.rank{rank}.txt", "a", encoding="utf-8")

    history: dict[str, list] = {"epoch": [], "train_loss": [], "dev_loss": [], "seconds": []}
    guard = NonFiniteGuard(train_cfg.max_nonfinite_batches)
    try:
        for epoch in range(start_epoch, train_cfg.num_epochs + 1):
            seed_everything(train_cfg.seed + epoch)
            train_dl.sampler.set_epoch(epoch)
            ddp_model.train()
            start = time.time()
            total, frames = 0.0, 0
            batches = iter(train_dl)
            if train_cfg.progress and rank == 0:
                from tqdm import tqdm

                batches = tqdm(batches, desc=f"epoch {epoch}", leave=False)
            for i, batch in enumerate(batches):
                if train_cfg.max_batches_per_epoch and i >= train_cfg.max_batches_per_epoch:
                    break
                if batch_log is not None:
                    batch_log.write(f"{epoch} {i} {' '.join(batch['cut_ids'])}\n")
                b = _batch_loss(ddp_model, batch, tokenizer, train_cfg.ctc_impl)
                optimizer.zero_grad(set_to_none=True)
                b.loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                if guard.check(epoch, i, b.nonfinite, float(grad_norm)):
                    optimizer.step()
                scheduler.step()
                total += b.total
                frames += b.frames
                step = scheduler.last_epoch
                if writer is not None and step % 10 == 0:
                    writer.add_scalar("train/loss", b.total / max(b.frames, 1), step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
            total, frames = _all_reduce([total, float(frames)])
            train_loss = total / max(frames, 1.0)
            dev_loss = (
                compute_dev_loss(ddp_model, dev_dl, tokenizer, train_cfg.ctc_impl)
                if dev_dl is not None else float("nan")
            )
            seconds = time.time() - start
            history["epoch"].append(epoch)
            history["train_loss"].append(train_loss)
            history["dev_loss"].append(dev_loss)
            history["seconds"].append(seconds)
            if rank == 0:
                log.info(
                    "epoch %d: train loss %.4f, dev loss %.4f (per frame), lr %.2e, %.1f s",
                    epoch, train_loss, dev_loss, scheduler.get_last_lr()[0], seconds,
                )
                if guard.cuts or guard.updates_skipped:
                    log.warning("  so far %d cut losses were not finite and %d updates were skipped",
                                guard.cuts, guard.updates_skipped)
                weights = None
                if model.frontend is not None and model.frontend.layer_weights is not None:
                    weights = torch.softmax(model.frontend.layer_weights.detach(), 0).tolist()
                    log.info("  SSL layer weights: %s", " ".join(f"L{i + 1} {w:.3f}" for i, w in enumerate(weights)))
                if writer is not None:
                    writer.add_scalar("epoch/train_loss", train_loss, epoch)
                    writer.add_scalar("epoch/dev_loss", dev_loss, epoch)
                    writer.add_scalar("epoch/nonfinite_cuts", guard.cuts, epoch)
                    for i, w in enumerate(weights or []):
                        writer.add_scalar(f"ssl_layer_weight/L{i + 1}", w, epoch)
                    writer.flush()
                atomic_torch_save(
                    {
                        "model": checkpoint_state(model),
                        "config": asdict(model_cfg),
                        "kind": KIND,
                        "epoch": epoch,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "sampler": train_dl.sampler.state_dict(),
                        "train_config": asdict(train_cfg),
                        "train_loss": train_loss,
                        "dev_loss": dev_loss,
                    },
                    checkpoint_path(exp_dir, epoch),
                )
                keep_last(exp_dir, train_cfg.keep_last_k)
            if dist.is_initialized():
                dist.barrier()
    finally:
        if writer is not None:
            writer.close()
        if batch_log is not None:
            batch_log.close()
    return TrainResult(model=model, config=model_cfg, history=history)
