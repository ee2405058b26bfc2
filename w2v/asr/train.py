"""CTC training: Adam + Noam warmup, grad clipping, checkpoints and resume, on any device, in
one process or one per rank under torchrun.

:func:`train` is a short sequence of steps, as icefall's ``train.py`` reads: find where to
resume, resolve the model config, build model and optimizer, make the loaders, then
:func:`train_one_epoch` (which calls :func:`compute_loss`) and :func:`save_checkpoint` per epoch.
Device, mixed precision and processes come from :mod:`w2v.runtime.context` (``device``: auto,
cpu, cuda; ``amp``: none, bf16, fp16; nccl on CUDA, gloo on the CPU); checkpoint files from
:mod:`w2v.runtime.checkpoints`. Only rank 0 writes checkpoints, ``config.yaml`` and tensorboard.

Checkpoints: ``epoch-N.pt`` at each epoch's end, and with ``save_every_n`` a
``checkpoint-<step>.pt`` every that many updates, holding the sampler's state: a run resumed from
it continues the epoch after the batches already seen instead of repeating them. Both keep
their newest ``keep_last_k``. By default (``start_epoch=0``) a run resumes from the newest
checkpoint that loads (the ones that do not are named and skipped); stale temporary files of a
killed write are removed first.

Determinism: every epoch reseeds python/numpy/torch with ``seed + epoch`` and the sampler with
``set_epoch(epoch)``, so epochs 1..N in one go equal 1..k, then a resume from ``epoch-k.pt``.

Non-finite losses: a cut whose CTC loss is inf or nan is left out of the update and named in the
log; an update whose gradient norm is not finite is skipped. ``max_nonfinite_batches`` batches in
a row with either stop the run with a message (the model has diverged, or the data is broken).

CTC loss: k2's (``k2.ctc_loss`` over a ``DenseFsaVec``, the topology the decoders use), or
torch's (``ctc_impl="torch"``, and on a GPU when the installed k2 has no CUDA: see ``ctc.py``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from lhotse import CutSet
from lhotse.utils import compute_num_frames
from torch import nn

from w2v.asr.ctc import ctc_loss, greedy_keep, resolve_ctc_impl
from w2v.asr.data import cut_text, make_dataloader, model_inputs
from w2v.asr.frontend import ENCODER_PREFIX, checkpoint_state, load_model_state
from w2v.asr.model import (
    KIND,
    AsrConfig,
    build_model,
    input_subsampling,
    num_parameters,
    subsampled_lengths,
)
from w2v.asr.tokens import Tokenizer
from w2v.runtime import SAMPLE_RATE
from w2v.runtime.checkpoints import checkpoint_path, keep_last, newest_loadable, remove_stale_temporaries
from w2v.runtime.context import Runtime, init_runtime
from w2v.serialization import load as load_file
from w2v.utils import atomic_torch_save, atomic_write_text, seed_everything

log = logging.getLogger(__name__)

EPOCH, STEP = "epoch", "checkpoint"  # file prefixes: epoch-N.pt, checkpoint-<step>.pt


@dataclass
class TrainConfig:
    """Everything about a training run except the model (that is :class:`AsrConfig`)."""

    exp_dir: str = "exp/ctc_fbank"
    lang_dir: str = "data/lang_bpe_500"
    train_cuts: list[str] = field(default_factory=list)
    dev_cuts: list[str] = field(default_factory=list)
    token_type: str = "bpe"
    feature_type: str = "fbank"
    # N: exactly N epochs. 0 (the recipes' "auto"): until the smoothed dev loss stops improving
    # (:class:`Plateau`: no new best by 0.1% relative for ``patience`` epochs and at least
    # ``patience_updates`` updates, :attr:`Plateau.wait`), at most max_epochs.
    num_epochs: int = 0
    max_epochs: int = 200
    patience: int = 5
    patience_updates: int = 250
    # 0: from the newest checkpoint that loads (epoch 1 when there is none); 1: anew;
    # N > 1: from epoch-(N-1).pt
    start_epoch: int = 0
    # Keep only the newest k epoch-N.pt and checkpoint-<step>.pt (0 = all); decoding averages epochs.
    keep_last_k: int = 0
    # Also a checkpoint-<step>.pt every this many updates (0 = epoch ends only).
    save_every_n: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (w2v.runtime.context)
    amp: str = "none"  # none | bf16 | fp16 (CUDA)
    max_duration: float = 200.0
    num_buckets: int = 10
    spec_augment: bool = True
    # lr and warmup tuned on the synthetic mini corpus (25 epochs, 30 s batches, SpecAugment).
    # Warm-up lasts warmup_steps updates but at most warmup_epochs epochs of them, so a small
    # corpus (few updates per epoch) is not still warming up when a large one has converged.
    lr: float = 2e-3
    warmup_steps: int = 300
    warmup_epochs: float = 5.0
    weight_decay: float = 1e-6
    grad_clip: float = 5.0
    # Stop after this many batches in a row with a non-finite CTC loss or gradient.
    max_nonfinite_batches: int = 20
    ctc_impl: str = "k2"
    # A model with an attention decoder (AsrConfig.num_decoder_layers) trains on
    # ctc_weight × CTC + (1 − ctc_weight) × the decoder's label-smoothed loss (wenet: 0.3, 0.1).
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
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
    # A fine-tuned encoder stays frozen for the first N updates (fairseq's freeze_finetune_updates):
    # the new layers on top learn first.
    ssl_freeze_updates: int = 0
    # Append the cut ids of every batch, per rank, to ``exp_dir/batches.rank<r>.txt``.
    log_batches: bool = False
    tensorboard: bool = True
    progress: bool = True


@dataclass
class Plateau:
    """The stop rule of ``num_epochs`` 0: stop once the smoothed dev loss (the train loss without a
    dev set) has not set a new best, by at least ``min_gain`` relative, for ``patience`` epochs, and
    the model says something: greedy search on dev outputs at least ``min_output`` tokens per
    reference token.

    Why this rule and not an update budget: the number of updates to convergence changes with the
    data, the model and the front end (SSL features converge in a fraction of fbank's updates), and
    the dev loss says where it is for each of them; with Noam's open-ended decay no total length has
    to be known in advance. The output condition covers the stretch where a CTC model outputs
    (almost) only blanks and its loss is flat before it falls: on the tiny corpus with 100 BPE
    units the dev loss barely moved from epoch 15 to 52, while greedy search output a fifth of the
    reference's tokens. The loss is smoothed (exponential moving average, weight ``smoothing`` on
    the past) and patience lasts at least ``patience_updates`` updates (:attr:`wait`): with 10
    minutes of labels an epoch is 20 updates, the dev loss jumps ±3% from epoch to epoch while its
    trend falls 1% per epoch, and a raw 5-epoch patience stopped there on a lucky minimum. The
    state rides in every epoch checkpoint, so a resumed run stops where an uninterrupted one would.
    """

    patience: int = 5
    patience_updates: int = 0
    updates_per_epoch: float = 1.0
    min_output: float = 0.5
    min_gain: float = 1e-3
    smoothing: float = 0.5
    best: float = math.inf
    best_epoch: int = 0
    smoothed: float | None = None
    output_ratio: float | None = None  # the last epoch's; None: not measured (no dev set)
    stopped: bool = False

    def update(self, epoch: int, loss: float, output_ratio: float | None = None) -> bool:
        """Record ``epoch``'s loss and dev output ratio; True when training should stop after it."""
        if math.isfinite(loss):
            past = self.smoothed
            self.smoothed = loss if past is None else self.smoothing * past + (1 - self.smoothing) * loss
            if self.smoothed < self.best * (1 - self.min_gain):
                self.best, self.best_epoch = self.smoothed, epoch
        if output_ratio is not None:
            self.output_ratio = output_ratio
        says_something = self.output_ratio is None or self.output_ratio >= self.min_output
        self.stopped = says_something and epoch - self.best_epoch >= self.wait
        return self.stopped

    @property
    def wait(self) -> int:
        """Epochs without a new best before a stop: ``patience``, or more when they hold fewer than
        ``patience_updates`` updates. 250 updates: 5 epochs of the mini corpus (26 min, 30 s
        batches), 13 of its 10-minute label budget, 50 of the tiny corpus (2.5 min)."""
        return max(self.patience, math.ceil(self.patience_updates / self.updates_per_epoch - 1e-9))


def updates_per_epoch(train_cfg: TrainConfig, train_seconds: float, world_size: int = 1) -> float:
    """About ``train_seconds / (max_duration × world_size)``: the bucketing sampler fills batches
    close to max_duration (at least one update)."""
    return max(1.0, train_seconds / (train_cfg.max_duration * world_size))


def warmup_updates(train_cfg: TrainConfig, train_seconds: float, world_size: int = 1) -> int:
    """Warm-up length: ``warmup_steps``, at most ``warmup_epochs`` epochs of updates.

    Mini corpus (26 min, 30 s batches): 52 updates per epoch (:func:`updates_per_epoch`) → 260;
    tiny corpus (2.5 min): 5 per epoch → 25.
    """
    per_epoch = updates_per_epoch(train_cfg, train_seconds, world_size)
    return max(1, min(train_cfg.warmup_steps, round(train_cfg.warmup_epochs * per_epoch)))


def noam_factor(step: int, warmup: int) -> float:
    """Linear warmup to 1 at ``warmup`` steps, then ``sqrt(warmup / step)`` decay (step ≥ 1)."""
    step = max(step, 1)
    return min(step / warmup, math.sqrt(warmup / step))


# --------------------------------------------------------------------------- data


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
        frames = cut.num_frames if frame_shift is None else compute_num_frames(cut.duration, frame_shift, SAMPLE_RATE)
        n_out = int(subsampled_lengths(torch.tensor(frames), subsampling))
        return n_out >= len(tokenizer.encode([cut_text(cut)])[0]) > 0

    kept = cuts.filter(ok).to_eager()
    dropped = len(cuts) - len(kept)
    if dropped:
        log.warning("Dropped %d of %d cuts: too short for their transcript", dropped, len(cuts))
    return kept


# --------------------------------------------------------------------------- resume


@dataclass
class ResumePoint:
    """Where training continues: ``epoch`` (1-based), from ``ckpt`` (None: anew)."""

    epoch: int = 1
    ckpt: Optional[dict] = None
    path: Optional[Path] = None
    mid_epoch: bool = False  # ckpt is a checkpoint-<step>.pt inside ``epoch``


def _read_ckpt(path: Path) -> dict:
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise ValueError(f"{path}: kind {ckpt.get('kind') if isinstance(ckpt, dict) else None!r} is not {KIND!r}")
    return ckpt


def _step_of(ckpt: dict) -> int:
    return int(ckpt.get("step", ckpt["scheduler"]["last_epoch"]))


def find_resume(exp_dir: Path, start_epoch: int) -> ResumePoint:
    """``start_epoch`` 0: the newest ``epoch-N.pt`` or ``checkpoint-<step>.pt`` that loads (by
    update count); 1: anew; N > 1: from ``epoch-(N-1).pt``, which must load."""
    if start_epoch == 1:
        return ResumePoint()
    if start_epoch > 1:
        path = checkpoint_path(exp_dir, start_epoch - 1, EPOCH)
        if not path.is_file():
            raise FileNotFoundError(f"--start-epoch {start_epoch} needs {path}")
        return ResumePoint(start_epoch, _read_ckpt(path), path)
    at_end = newest_loadable(exp_dir, _read_ckpt, EPOCH)
    inside = newest_loadable(exp_dir, _read_ckpt, STEP)
    if inside is not None and (at_end is None or _step_of(inside[2]) > _step_of(at_end[2])):
        _, path, ckpt = inside
        point = ResumePoint(int(ckpt["epoch"]), ckpt, path, mid_epoch=True)
    elif at_end is not None:
        n, path, ckpt = at_end
        point = ResumePoint(n + 1, ckpt, path)
    else:
        return ResumePoint()
    log.info("resuming after %s", point.path)
    return point


# --------------------------------------------------------------------------- build


def resolve_model_config(train_cfg: TrainConfig, model_cfg: AsrConfig, tokenizer: Tokenizer,
                         train_cuts: CutSet, resume: ResumePoint) -> tuple[AsrConfig, float, Optional[dict]]:
    """(model config, input frame shift in seconds, SSL encoder weights to load or None).

    A new model takes the lang dir's token count and the input the training cuts hold (feature
    dim; 40 ms output frames: ×4 for 10 ms fbank, ×2 for 20 ms SSL features) or the on-the-fly
    SSL front end's. A resumed model keeps its stored config; the cuts must fit it.
    """
    source = " ".join(train_cfg.train_cuts)
    encoder_state = None
    if resume.ckpt is not None:
        model_cfg = AsrConfig.from_dict(resume.ckpt["config"])
    if resume.ckpt is None and train_cfg.ssl_checkpoint:
        from w2v.asr.frontend import make_spec

        spec, encoder_state = make_spec(train_cfg.ssl_checkpoint, train_cfg.ssl_layer,
                                        train_cfg.ssl_finetune, train_cfg.ssl_bf16)
        model_cfg = AsrConfig.from_dict({**asdict(model_cfg), "ssl": spec})
    if model_cfg.ssl is not None:
        feature_dim, frame_shift = model_cfg.ssl["feature_dim"], model_cfg.ssl["frame_shift"]
    else:
        feature_dim, frame_shift = feature_shape(train_cuts, source)
    subsampling = input_subsampling(model_cfg.head, frame_shift)
    if resume.ckpt is None:
        model_cfg = AsrConfig.from_dict({
            **asdict(model_cfg), "num_tokens": tokenizer.num_tokens,
            "feature_dim": feature_dim, "subsampling": subsampling,
        })
    elif (feature_dim, subsampling) != (model_cfg.feature_dim, model_cfg.subsampling):
        raise ValueError(
            f"{source}: {feature_dim}-dim features at {frame_shift * 1000:g} ms, but the model in "
            f"{resume.path} takes {model_cfg.feature_dim}-dim features subsampled ×{model_cfg.subsampling}"
        )
    if resume.ckpt is None and model_cfg.num_decoder_layers:
        if "<sos/eos>" not in tokenizer.tokens:
            raise ValueError(f"{train_cfg.lang_dir}/tokens.txt has no <sos/eos>, which the attention decoder needs")
        model_cfg = AsrConfig.from_dict({**asdict(model_cfg), "sos_eos": tokenizer.tokens["<sos/eos>"]})
    if model_cfg.num_tokens != tokenizer.num_tokens:
        raise ValueError(
            f"Model has {model_cfg.num_tokens} outputs but {train_cfg.lang_dir} has "
            f"{tokenizer.num_tokens} tokens"
        )
    return model_cfg, frame_shift, encoder_state


def build_optimizer(model: nn.Module, train_cfg: TrainConfig, warmup: int | None = None):
    """Adam with Noam warmup (``warmup`` updates, default ``warmup_steps``); a fine-tuned SSL
    encoder in its own group at lr × ssl_lr_scale."""
    warmup = warmup or train_cfg.warmup_steps
    encoder = [p for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIX) and p.requires_grad]
    encoder_ids = {id(p) for p in encoder}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]}]
    if encoder:  # a fine-tuned SSL encoder moves slower than the layers on top
        groups.append({"params": encoder, "lr": train_cfg.lr * train_cfg.ssl_lr_scale})
    optimizer = torch.optim.Adam(groups, lr=train_cfg.lr, betas=(0.9, 0.98), eps=1e-9,
                                 weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: noam_factor(step, warmup))
    return optimizer, scheduler


# --------------------------------------------------------------------------- one epoch


@dataclass
class BatchLoss:
    loss: torch.Tensor  # to back-propagate: summed finite CTC / frames (joint: see compute_loss)
    total: float  # summed finite CTC
    frames: int  # output frames of the cuts with a finite loss
    nonfinite: list[str]  # ids of the cuts whose loss is inf or nan
    att_total: float = 0.0  # the attention decoder's summed loss
    att_tokens: int = 0
    emitted: int = 0  # tokens greedy search outputs (with count_output)
    target_tokens: int = 0


def compute_loss(model: nn.Module, batch: dict, tokenizer: Tokenizer, impl: str, rt: Runtime,
                 ctc_weight: float = 1.0, count_output: bool = False) -> BatchLoss:
    """Loss of one batch: the network under ``rt``'s mixed precision, the losses in fp32.

    ``ctc_weight < 1`` (a model with an attention decoder): ``ctc_weight`` × CTC per output frame
    + (1 − ctc_weight) × the decoder's loss per token. ``count_output``: also count the tokens
    greedy search outputs and the targets' tokens (:class:`Plateau` reads their ratio).
    """
    inputs, lens = model_inputs(batch)
    targets = tokenizer.encode(batch["texts"])
    with rt.autocast():
        out = model(inputs.to(rt.device), lens.to(rt.device), targets if ctc_weight < 1 else None)
    log_probs, out_lens = out[0].float(), out[1]
    losses = ctc_loss(log_probs, out_lens, targets, impl)
    finite = torch.isfinite(losses)
    frames = int(out_lens[finite].sum())
    total = losses[finite].sum()
    # Keep every parameter in the graph even when nothing is finite (DDP expects all gradients).
    loss = total / max(frames, 1) + 0.0 * log_probs.sum()
    bad = [cid for cid, ok in zip(batch["cut_ids"], finite.tolist()) if not ok]
    counts = (greedy_tokens(log_probs, out_lens), sum(len(t) for t in targets)) if count_output else (0, 0)
    if len(out) == 2:
        return BatchLoss(loss, float(total.detach()), frames, bad, 0.0, 0, *counts)
    att, tokens = out[2], out[3]
    loss = ctc_weight * loss + (1 - ctc_weight) * att / max(tokens, 1)
    return BatchLoss(loss, float(total.detach()), frames, bad, float(att.detach()), tokens, *counts)


def greedy_tokens(log_probs: torch.Tensor, lengths: torch.Tensor) -> int:
    """How many tokens greedy CTC search outputs for the batch (repeats merged, blanks dropped)."""
    return int(greedy_keep(log_probs, lengths)[1].sum())


class NonFiniteGuard:
    """Counts batches with a non-finite loss or gradient; too many in a row raise."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.cuts, self.updates_skipped = limit, 0, 0, 0

    def check(self, epoch: int, i: int, bad_cuts: list[str], grad_norm: float, stepped: bool) -> None:
        """Log what was non-finite in batch ``i``; raise after ``limit`` such batches in a row."""
        if bad_cuts:
            self.cuts += len(bad_cuts)
            log.warning("epoch %d batch %d: CTC loss is not finite for %d cut(s), left out: %s",
                        epoch, i, len(bad_cuts), " ".join(bad_cuts[:10]) + (" ..." if len(bad_cuts) > 10 else ""))
        if not stepped:
            self.updates_skipped += 1
            log.warning("epoch %d batch %d: gradient norm is %s; update skipped", epoch, i, grad_norm)
        self.in_a_row = self.in_a_row + 1 if (bad_cuts or not stepped) else 0
        if self.limit and self.in_a_row >= self.limit:
            raise RuntimeError(
                f"{self.in_a_row} batches in a row had a non-finite CTC loss or gradient (epoch {epoch}, "
                f"batch {i}; last cuts: {' '.join(bad_cuts[:10]) or 'all finite, gradient ' + str(grad_norm)}). "
                f"The model has diverged (try a lower --lr or more --warmup-steps) or these cuts cannot "
                f"be aligned to their transcripts; the last good checkpoint is kept"
            )


@dataclass
class Loop:
    """What the steps of one run share (icefall keeps this in ``params``)."""

    cfg: TrainConfig
    rt: Runtime
    model: nn.Module  # unwrapped
    ddp_model: nn.Module  # what the forward pass uses (DDP around ``model`` with several processes)
    model_cfg: AsrConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    tokenizer: Tokenizer
    train_dl: torch.utils.data.DataLoader
    dev_dl: Optional[torch.utils.data.DataLoader]
    guard: NonFiniteGuard
    ctc_impl: str
    ctc_weight: float  # 1.0: CTC only (no decoder)
    writer: object = None  # tensorboard SummaryWriter on rank 0
    batch_log: object = None
    warmup: int = 0  # updates (warmup_updates), stored in checkpoints
    updates_per_epoch: float = 1.0  # about (:func:`updates_per_epoch`), for the patience in updates
    dev_output_ratio: float | None = None  # tokens greedy search output on dev / reference tokens

    @property
    def exp_dir(self) -> Path:
        return Path(self.cfg.exp_dir)

    @property
    def step(self) -> int:
        return self.scheduler.last_epoch


def train_one_epoch(loop: Loop, epoch: int) -> float:
    """One pass over the training batches (the rest of it after a mid-epoch resume); returns
    the CTC loss per output frame, summed over processes."""
    cfg, rt = loop.cfg, loop.rt
    loop.ddp_model.train()
    total, frames = 0.0, 0
    batches = iter(loop.train_dl)
    if cfg.progress and rt.is_main:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"epoch {epoch}", leave=False)
    for i, batch in enumerate(batches):
        if cfg.max_batches_per_epoch and i >= cfg.max_batches_per_epoch:
            break
        if loop.batch_log is not None:
            loop.batch_log.write(f"{epoch} {i} {' '.join(batch['cut_ids'])}\n")
        if loop.model.frontend is not None:
            loop.model.frontend.frozen = loop.step < cfg.ssl_freeze_updates
        b = compute_loss(loop.ddp_model, batch, loop.tokenizer, loop.ctc_impl, rt, loop.ctc_weight)
        loop.optimizer.zero_grad(set_to_none=True)
        rt.backward(b.loss)
        grad_norm, stepped = rt.clip_and_step(loop.optimizer, loop.model.parameters(), cfg.grad_clip)
        loop.scheduler.step()
        loop.guard.check(epoch, i, b.nonfinite, grad_norm, stepped or rt.scaler is not None)
        total += b.total
        frames += b.frames
        if loop.writer is not None and loop.step % 10 == 0:
            loop.writer.add_scalar("train/loss", b.total / max(b.frames, 1), loop.step)
            loop.writer.add_scalar("train/lr", loop.scheduler.get_last_lr()[0], loop.step)
            loop.writer.add_scalar("train/grad_norm", grad_norm, loop.step)
        if cfg.save_every_n and loop.step % cfg.save_every_n == 0:
            save_checkpoint(loop, epoch, checkpoint_path(loop.exp_dir, loop.step, STEP))
    total, frames = rt.all_reduce_sum([total, float(frames)])
    return total / max(frames, 1.0)


@torch.no_grad()
def compute_dev_loss(loop: Loop) -> float:
    """CTC loss per output frame over the dev set (summed over processes)."""
    if loop.dev_dl is None:
        return float("nan")
    loop.ddp_model.eval()
    sums = [0.0] * 6  # CTC loss, frames, decoder loss, decoder tokens, tokens output, target tokens
    for batch in loop.dev_dl:
        b = compute_loss(loop.ddp_model, batch, loop.tokenizer, loop.ctc_impl, loop.rt, loop.ctc_weight,
                         count_output=True)
        for i, v in enumerate((b.total, b.frames, b.att_total, b.att_tokens, b.emitted, b.target_tokens)):
            sums[i] += float(v)
    loop.ddp_model.train()
    total, frames, att, tokens, emitted, targets = loop.rt.all_reduce_sum(sums)
    loop.dev_output_ratio = emitted / max(targets, 1.0)
    if loop.rt.is_main:
        if tokens:
            log.info("  dev attention-decoder loss %.4f (per token)", att / tokens)
        log.info("  dev greedy output: %.2f tokens per reference token", loop.dev_output_ratio)
    return total / max(frames, 1.0)


def save_checkpoint(loop: Loop, epoch: int, path: Path, **extra) -> None:
    """Rank 0 writes ``path`` atomically (model, optimizer, scheduler and sampler states), then
    keeps the newest ``keep_last_k`` files of its kind. Every process waits for it."""
    if loop.rt.is_main:
        atomic_torch_save({
            "model": checkpoint_state(loop.model), "config": asdict(loop.model_cfg), "kind": KIND,
            "epoch": epoch, "step": loop.step, "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict(), "sampler": loop.train_dl.sampler.state_dict(),
            "grad_scaler": loop.rt.scaler.state_dict() if loop.rt.scaler is not None else None,
            "train_config": asdict(loop.cfg), "warmup": loop.warmup, **extra,
        }, path)
        keep_last(loop.exp_dir, loop.cfg.keep_last_k, path.name.split("-")[0])
    loop.rt.barrier()


def write_config_yaml(path: Path, model_cfg: AsrConfig, train_cfg: TrainConfig) -> None:
    import yaml

    atomic_write_text(
        path,
        yaml.safe_dump({"kind": KIND, "model": asdict(model_cfg), "train": asdict(train_cfg)},
                       sort_keys=False),
    )


def _log_epoch(loop: Loop, epoch: int, train_loss: float, dev_loss: float, seconds: float) -> None:
    log.info("epoch %d: train loss %.4f, dev loss %.4f (per frame), lr %.2e, %.1f s",
             epoch, train_loss, dev_loss, loop.scheduler.get_last_lr()[0], seconds)
    if loop.guard.cuts or loop.guard.updates_skipped:
        log.warning("  so far %d cut losses were not finite and %d updates were skipped",
                    loop.guard.cuts, loop.guard.updates_skipped)
    frontend = loop.model.frontend
    weights = []
    if frontend is not None and frontend.layer_weights is not None:
        weights = torch.softmax(frontend.layer_weights.detach().float(), 0).tolist()
        log.info("  SSL layer weights: %s", " ".join(f"L{i + 1} {w:.3f}" for i, w in enumerate(weights)))
    if loop.writer is not None:
        loop.writer.add_scalar("epoch/train_loss", train_loss, epoch)
        loop.writer.add_scalar("epoch/dev_loss", dev_loss, epoch)
        loop.writer.add_scalar("epoch/nonfinite_cuts", loop.guard.cuts, epoch)
        for i, w in enumerate(weights):
            loop.writer.add_scalar(f"ssl_layer_weight/L{i + 1}", w, epoch)
        loop.writer.flush()


# --------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    """The trained model (unwrapped from DDP, train mode; None when there was nothing to train)
    and per-epoch history of this run."""

    model: Optional[nn.Module]
    config: AsrConfig
    history: dict


def setup(train_cfg: TrainConfig, model_cfg: AsrConfig, rt: Runtime, resume: ResumePoint) -> Loop:
    """Model, optimizer, loaders and outputs of a run, restored from ``resume``."""
    tokenizer = Tokenizer(train_cfg.lang_dir, train_cfg.token_type)
    train_cuts = load_cuts(train_cfg.train_cuts)
    model_cfg, frame_shift, encoder_state = resolve_model_config(train_cfg, model_cfg, tokenizer, train_cuts, resume)
    seed_everything(train_cfg.seed)
    model = build_model(model_cfg)
    if encoder_state is not None:
        model.frontend.encoder.load_state_dict(encoder_state)
    if not train_cfg.spec_augment:
        model.spec_augment = None
    train_seconds = sum(c.duration for c in train_cuts)
    warmup = (resume.ckpt or {}).get("warmup") or warmup_updates(train_cfg, train_seconds, rt.world_size)
    optimizer, scheduler = build_optimizer(model, train_cfg, warmup)
    if resume.ckpt is not None:
        load_model_state(model, resume.ckpt["model"], str(resume.path))
    model.to(rt.device)
    if resume.ckpt is not None:  # after the move: the optimizer state follows the parameters' device
        optimizer.load_state_dict(resume.ckpt["optimizer"])
        scheduler.load_state_dict(resume.ckpt["scheduler"])
        if rt.scaler is not None and resume.ckpt.get("grad_scaler"):
            rt.scaler.load_state_dict(resume.ckpt["grad_scaler"])
    # A fine-tuned encoder has weights that a chosen layer never reaches (later blocks, the mask
    # embedding): DDP must not wait for their gradients.
    tuned = model_cfg.ssl is not None and model_cfg.ssl["finetune"]
    ddp_model = rt.wrap(model, find_unused_parameters=tuned)

    audio = model_cfg.ssl is not None
    train_cuts = keep_trainable(train_cuts, tokenizer, model_cfg.subsampling, frame_shift if audio else None)
    train_dl = make_dataloader(
        train_cuts, train=True, max_duration=train_cfg.max_duration, num_buckets=train_cfg.num_buckets,
        spec_augment=train_cfg.spec_augment, world_size=rt.world_size, rank=rt.rank,
        num_workers=train_cfg.num_workers, seed=train_cfg.seed, audio=audio,
    )
    dev_dl = None
    if train_cfg.dev_cuts:
        dev_dl = make_dataloader(
            load_cuts(train_cfg.dev_cuts), train=False, max_duration=train_cfg.max_duration,
            world_size=rt.world_size, rank=rt.rank, num_workers=train_cfg.num_workers, audio=audio,
        )
    loop = Loop(train_cfg, rt, model, ddp_model, model_cfg, optimizer, scheduler, tokenizer, train_dl,
                dev_dl, NonFiniteGuard(train_cfg.max_nonfinite_batches),
                resolve_ctc_impl(train_cfg.ctc_impl, rt.device),
                train_cfg.ctc_weight if model_cfg.num_decoder_layers else 1.0, warmup=warmup,
                updates_per_epoch=updates_per_epoch(train_cfg, train_seconds, rt.world_size))
    model.label_smoothing = train_cfg.label_smoothing
    exp_dir = loop.exp_dir
    if rt.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_config_yaml(exp_dir / "config.yaml", model_cfg, train_cfg)
        log.info("Model %s: %.2fM parameters, %s", KIND, num_parameters(model) / 1e6, model_cfg)
        if train_cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            loop.writer = SummaryWriter(str(exp_dir / "tensorboard"))
    if train_cfg.log_batches:
        exp_dir.mkdir(parents=True, exist_ok=True)
        loop.batch_log = open(exp_dir / f"batches.rank{rt.rank}.txt", "a", encoding="utf-8")
    return loop


def train(train_cfg: TrainConfig, model_cfg: AsrConfig) -> TrainResult:
    """Train up to epoch ``num_epochs`` (0: until :class:`Plateau` stops it, at most
    ``max_epochs``); history has ``epoch``, ``train_loss``, ``dev_loss`` (CTC per output frame)
    and ``seconds`` per epoch trained by this call.

    ``model_cfg`` describes a new model (:func:`resolve_model_config`); a resumed run keeps the
    config stored in its checkpoint.
    """
    rt = init_runtime(train_cfg.device, train_cfg.amp)
    exp_dir = Path(train_cfg.exp_dir)
    if rt.is_main:
        for prefix in (EPOCH, STEP):
            remove_stale_temporaries(exp_dir, prefix)
    resume = find_resume(exp_dir, train_cfg.start_epoch)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "dev_loss": [], "seconds": []}
    stored = (resume.ckpt or {}).get("plateau", {})
    plateau = Plateau(train_cfg.patience, train_cfg.patience_updates, **{
        k: stored[k] for k in ("updates_per_epoch", "best", "best_epoch", "smoothed", "output_ratio") if k in stored})
    last = train_cfg.num_epochs or train_cfg.max_epochs
    done = resume.epoch > last or (not train_cfg.num_epochs and not resume.mid_epoch and bool(stored)
                                   and plateau.update(resume.epoch - 1, math.nan))
    if done:
        why = (f"--num-epochs {train_cfg.num_epochs}" if train_cfg.num_epochs else
               f"the dev loss stopped improving at epoch {plateau.best_epoch} ({plateau.wait} epochs of "
               f"patience, --max-epochs {train_cfg.max_epochs})")
        log.info("%s already holds epoch-%d.pt: nothing to train for %s", exp_dir, resume.epoch - 1, why)
        if rt.is_main:
            keep_last(exp_dir, train_cfg.keep_last_k, EPOCH)
        return TrainResult(model=None, config=AsrConfig.from_dict(resume.ckpt["config"]), history=history)
    loop = setup(train_cfg, model_cfg, rt, resume)
    plateau.updates_per_epoch = loop.updates_per_epoch
    if resume.mid_epoch:  # continue the epoch after the batches already seen
        loop.train_dl.sampler.load_state_dict(dict(resume.ckpt["sampler"]))
    try:
        for epoch in range(resume.epoch, last + 1):
            seed_everything(train_cfg.seed + epoch)
            if not (resume.mid_epoch and epoch == resume.epoch):
                loop.train_dl.sampler.set_epoch(epoch)
            start = time.time()
            train_loss = train_one_epoch(loop, epoch)
            dev_loss = compute_dev_loss(loop)
            seconds = time.time() - start
            for key, value in (("epoch", epoch), ("train_loss", train_loss), ("dev_loss", dev_loss),
                               ("seconds", seconds)):
                history[key].append(value)
            stop = plateau.update(epoch, dev_loss if loop.dev_dl is not None else train_loss, loop.dev_output_ratio)
            if rt.is_main:
                _log_epoch(loop, epoch, train_loss, dev_loss, seconds)
            save_checkpoint(loop, epoch, checkpoint_path(exp_dir, epoch, EPOCH),
                            train_loss=train_loss, dev_loss=dev_loss, plateau=asdict(plateau))
            if stop and not train_cfg.num_epochs:
                log.info("stopping after epoch %d: no better %s loss since epoch %d (%.4f smoothed) in %d epochs",
                         epoch, "dev" if loop.dev_dl is not None else "train", plateau.best_epoch,
                         plateau.best, plateau.wait)
                break
    finally:
        if loop.writer is not None:
            loop.writer.close()
        if loop.batch_log is not None:
            loop.batch_log.close()
    return TrainResult(model=loop.model, config=loop.model_cfg, history=history)
