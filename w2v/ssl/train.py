"""Self-supervised pretraining loop over lhotse cuts of raw audio (one process or DDP via torchrun).

Checkpoints ``exp_dir/checkpoint-<step>.pt`` hold the encoder in the project-wide layout
(``{"model", "config", "kind"}``, readable by ``w2v.models.load_pretrained``) plus what resuming
needs (``pretrainer`` heads/quantizer/teacher, ``optimizer``, ``scheduler``, ``step``). A run restarts
from the newest checkpoint in its exp dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset

from w2v import serialization
from w2v.runtime import SAMPLE_RATE, checkpoints
from w2v.runtime.context import Runtime, init_runtime
from w2v.ssl.kmeans import KMeans, LayerLabeler, MfccLabeler, fit_kmeans, mfcc_features
from w2v.ssl.pretraining import (
    Data2VecPretrainConfig,
    Data2VecPretrainer,
    HubertPretrainConfig,
    HubertPretrainer,
    PretrainOutput,
    Wav2Vec2PretrainConfig,
    Wav2Vec2Pretrainer,
    Wav2VecPretrainConfig,
    Wav2VecPretrainer,
    wavlm_pretrain_config,
)
from w2v.utils import atomic_torch_save, atomic_write_text, check_config_fields, seed_everything

log = logging.getLogger(__name__)

SSL_MODELS = ("wav2vec", "vq_wav2vec", "wav2vec2", "data2vec", "hubert", "wavlm")
SSL_SIZES = ("tiny", "small", "base", "large")  # w2v.models.factory; not every family has each


@dataclass
class PretrainConfig:
    ssl_model: str = "wav2vec2"
    size: str = "tiny"  # tiny | small | base | large (where the family has one; w2v.models.factory)
    cuts: Sequence[str] = ()
    exp_dir: str = "exp/ssl_wav2vec2"
    num_steps: int = 1000  # optimizer updates
    max_duration: float = 200.0  # seconds of (cropped) audio per batch and rank
    crop_seconds: float = 5.0  # random crop of longer utterances
    min_seconds: float = 0.5  # shorter cuts are dropped
    accum_grad: int = 1
    lr: float | None = None  # peak; None: the family and size's preset (default_lr)
    warmup_steps: int = -1  # -1: 8 % of num_steps (fairseq's 32k of 400k)
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    seed: int = 42
    num_buckets: int = 10
    num_workers: int = 0
    log_interval: int = 10
    save_every: int = 500
    keep_last: int = 3
    tensorboard: bool = True
    device: str = "auto"  # "auto": cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu
    # Forward and loss under bf16 autocast (weights, optimizer and gradients stay fp32). On CPUs
    # with AVX512-BF16 the matrix multiplies run ~4x faster than fp32.
    bf16: bool = False
    amp: str = "none"  # none | bf16 | fp16 (CUDA, with a gradient scaler); bf16=True is amp="bf16"
    progress: bool = True
    vq_quantizer: str = "gumbel"  # vq_wav2vec only
    num_clusters: int = 100  # hubert / wavlm: MFCC k-means clusters
    kmeans_path: str | None = None  # reuse these centroids instead of fitting them
    kmeans_max_cuts: int = 500
    # HuBERT iteration 2: cluster this layer (1-based block index) of a previous model instead of MFCC.
    label_checkpoint: str | None = None
    label_layer: int = 6
    # Objective overrides, e.g. {"num_negatives": 50}; applied to the family's objective config.
    objective_overrides: dict[str, Any] = field(default_factory=dict)
    # Encoder overrides, e.g. {"layerdrop": 0.0}; applied to the encoder factory.
    encoder_overrides: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# data


class RawAudioDataset(Dataset):
    """Batches of randomly cropped raw audio from a CutSet (what a lhotse sampler yields).

    Returns ``{"waveforms": [B, T] float, "lengths": [B] samples, "cut_ids": list[str]}``.
    """

    def __init__(self, crop_seconds: float | None = 5.0, seed: int = 0) -> None:
        self.crop = None if crop_seconds is None else int(crop_seconds * SAMPLE_RATE)
        self.rng = random.Random(seed)

    def __getitem__(self, cuts: CutSet) -> dict:
        waves = []
        for cut in cuts:
            audio = torch.as_tensor(cut.load_audio())  # [channels, samples]
            if cut.sampling_rate != SAMPLE_RATE:
                raise ValueError(f"{cut.id}: expected {SAMPLE_RATE} Hz audio, found {cut.sampling_rate}")
            audio = audio[0].float()
            if self.crop is not None and audio.numel() > self.crop:
                start = self.rng.randrange(audio.numel() - self.crop + 1)
                audio = audio[start : start + self.crop]
            waves.append(audio)
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        batch = torch.zeros(len(waves), int(lengths.max()) if waves else 0)
        for i, w in enumerate(waves):
            batch[i, : w.numel()] = w
        return {"waveforms": batch, "lengths": lengths, "cut_ids": [c.id for c in cuts]}


def _long_enough(cut, min_seconds: float) -> bool:
    return cut.duration >= min_seconds


def _cropped(cut, seconds: float):
    return cut.truncate(duration=min(cut.duration, seconds), preserve_id=True)


def load_cuts(paths: Sequence[str], min_seconds: float) -> CutSet:
    cuts = CutSet.from_file(paths[0]) if len(paths) == 1 else CutSet.from_files(list(paths))
    return cuts.filter(functools.partial(_long_enough, min_seconds=min_seconds))


def make_dataloader(cuts: CutSet, cfg: PretrainConfig, world_size: int, rank: int) -> DataLoader:
    # The sampler sees cropped durations so max_duration bounds the audio actually loaded.
    crop = cfg.crop_seconds
    sampler_cuts = cuts.map(functools.partial(_cropped, seconds=crop)) if crop else cuts
    sampler = DynamicBucketingSampler(
        sampler_cuts,
        max_duration=cfg.max_duration,
        num_buckets=cfg.num_buckets,
        shuffle=True,
        drop_last=False,
        world_size=world_size,
        rank=rank,
        seed=cfg.seed,
    )
    # Truncated cuts would always load the same head of the audio; look the full cut up instead.
    full = cuts.to_eager() if crop else None
    dataset = RawAudioDataset(crop, seed=cfg.seed + rank)
    if full is not None:
        dataset = _FullCutDataset(dataset, full)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=cfg.num_workers)


class _FullCutDataset(Dataset):
    def __init__(self, inner: RawAudioDataset, full: CutSet) -> None:
        self.inner = inner
        self.full = full

    def __getitem__(self, cuts: CutSet) -> dict:
        return self.inner[CutSet.from_cuts(self.full[c.id] for c in cuts)]


# ---------------------------------------------------------------------------------------------
# models


def _encoder_factory(family: str, size: str):
    import w2v.models.factory as factory

    name = f"{family}_{size}"
    if not hasattr(factory, name):
        raise ValueError(f"No encoder factory {name}; have {sorted(factory.FACTORIES)}")
    return getattr(factory, name)


def _objective_config(cls, preset: dict, overrides: dict):
    check_config_fields(cls, overrides)
    return cls(**{**preset, **overrides})


def _pick(factories: dict, family: str, size: str):
    if size not in factories:
        raise ValueError(f"{family} has no size {size!r}; expected one of {sorted(factories)}")
    return factories[size]


_TINY_HUBERT = dict(final_dim=64)

# wav2vec 2.0 at size tiny, trained from scratch in CPU minutes. Same loss formula as the paper;
# hyper-parameters differ where the BASE values keep a 64-channel model at the chance level
# (ln 101 = 4.615) for hundreds of updates (measured on the synthetic mini corpus, 8 x 3 s batches):
# * feature_penalty_weight 0 (paper: 10). While the contrastive term is at chance its gradient is
#   small and noisy, so Adam normalises the penalty's consistent gradient into full-size steps on the
#   conv weights: the 64-channel conv output shrinks to a mean square of 0.001-0.004 within 40 updates
#   at weight 10 *and* at weight 0.1, its GELUs work near-linearly, the quantizer then codes noise
#   and the context network learns nothing. The contrastive loss only leaves chance once the conv
#   output grows (mean square 0.2 -> 10).
# * no dropout / layerdrop: a short run does not overfit 25 minutes of audio.
# * Gumbel temperature reaches its 0.5 floor after ~200 updates (decay 0.993) instead of ~280k.
# * codebooks of 2 x 64 entries, 64-dim codewords and final projection (BASE: 2 x 320, 256).
# * peak learning rate 5e-3 (train default 5e-4), warmup 8 % as always.
TINY_WAV2VEC2_OBJECTIVE = dict(
    num_vars=64, codevector_dim=64, final_dim=64, feature_penalty_weight=0.0, temperature_decay=0.993
)
TINY_WAV2VEC2_ENCODER = dict(dropout=0.0, attention_dropout=0.0, dropout_input=0.0, layerdrop=0.0)
TINY_WAV2VEC2_LR = 5e-3
# Size small (4 × 128 on log-mels, w2v.models.factory): nothing to penalise (the log-mels have no
# weights), HuBERT's projection at the model width; peak lr 2e-3 (HuBERT: masked accuracy 0.24 after
# 4000 updates of 24 s on the mini corpus + 60 min unlabelled, 16 min on 2 cores).
SMALL_OBJECTIVE = dict(feature_penalty_weight=0.0)
SMALL_HUBERT = dict(SMALL_OBJECTIVE, final_dim=128)
SMALL_LR = 2e-3
DEFAULT_LR = 5e-4
# Objective presets of the CPU sizes, by size then family (none: the paper's values).
OBJECTIVE_PRESETS = {
    "tiny": {"wav2vec2": TINY_WAV2VEC2_OBJECTIVE, "hubert": _TINY_HUBERT, "wavlm": _TINY_HUBERT},
    "small": {"wav2vec2": SMALL_OBJECTIVE, "hubert": SMALL_HUBERT, "wavlm": SMALL_HUBERT},
}


def default_lr(cfg: PretrainConfig) -> float:
    """``cfg.lr``, or the preset peak learning rate of its family and size."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.size == "small":
        return SMALL_LR
    return TINY_WAV2VEC2_LR if (cfg.ssl_model, cfg.size) == ("wav2vec2", "tiny") else DEFAULT_LR


def build_pretrainer(cfg: PretrainConfig, labeler=None) -> nn.Module:
    """The pretrainer of ``cfg.ssl_model`` at ``cfg.size`` (fresh weights)."""
    family, size, enc_over, obj_over = cfg.ssl_model, cfg.size, cfg.encoder_overrides, cfg.objective_overrides
    if family == "wav2vec":
        from w2v.models import wav2vec as w

        model = _pick({"tiny": w.wav2vec_tiny, "base": w.wav2vec_base, "large": w.wav2vec_large}, family, size)(**enc_over)
        return Wav2VecPretrainer(model, _objective_config(Wav2VecPretrainConfig, {}, obj_over))
    if family == "vq_wav2vec":
        from w2v.models import vq_wav2vec as v

        enc = {"temperature_anneal_updates": max(1, int(0.7 * cfg.num_steps)), **enc_over}
        model = _pick({"tiny": v.vq_wav2vec_tiny, "base": v.vq_wav2vec_base}, family, size)(cfg.vq_quantizer, **enc)
        return Wav2VecPretrainer(model, _objective_config(Wav2VecPretrainConfig, {}, obj_over))
    if family == "wav2vec2" and size == "tiny":
        enc_over = {**TINY_WAV2VEC2_ENCODER, **enc_over}
    encoder = _encoder_factory(family, size)(**enc_over)
    preset = OBJECTIVE_PRESETS.get(size, {}).get(family, {})
    if family == "wav2vec2":
        return Wav2Vec2Pretrainer(encoder, _objective_config(Wav2Vec2PretrainConfig, preset, obj_over))
    if family == "data2vec":
        return Data2VecPretrainer(encoder, _objective_config(Data2VecPretrainConfig, preset, obj_over))
    if family in ("hubert", "wavlm"):
        if labeler is None:
            raise ValueError(f"{family} pretraining needs frame labels (a k-means labeler)")
        preset = dict(preset, num_clusters=labeler.num_clusters)
        if family == "wavlm":
            preset = dataclasses.asdict(wavlm_pretrain_config(**preset))
        return HubertPretrainer(encoder, _objective_config(HubertPretrainConfig, preset, obj_over), labeler)
    raise ValueError(f"Unknown ssl model {family!r}; expected one of {SSL_MODELS}")


def _kmeans_audio(cuts: CutSet, max_cuts: int, crop_seconds: float | None):
    """The first ``max_cuts`` cuts' audio ``[samples]``, each cut to ``crop_seconds``."""
    for i, cut in enumerate(cuts):
        if i >= max_cuts:
            break
        audio = torch.as_tensor(cut.load_audio())[0].float()
        yield audio[: int(crop_seconds * SAMPLE_RATE)] if crop_seconds else audio


def fit_layer_kmeans(
    encoder: nn.Module, layer: int, cuts: CutSet, num_clusters: int, max_cuts: int, crop_seconds: float | None, seed: int
) -> KMeans:
    """HuBERT iteration 2: k-means over one layer's outputs of a frozen encoder."""
    feats = []
    device = next(encoder.parameters()).device
    with torch.no_grad():
        for audio in _kmeans_audio(cuts, max_cuts, crop_seconds):
            layers, _ = encoder.extract_features(audio[None].to(device), num_layers=layer)
            feats.append(layers[layer - 1][0].cpu())
    x = torch.cat(feats)
    if x.shape[0] < num_clusters:
        raise ValueError(f"{x.shape[0]} frames are too few for {num_clusters} clusters")
    return fit_kmeans(x, num_clusters, num_iters=30, seed=seed)


def fit_mfcc_kmeans(cuts: CutSet, num_clusters: int, max_cuts: int, crop_seconds: float | None, seed: int) -> KMeans:
    """HuBERT iteration 1: k-means over 39-dim MFCC at 20 ms (the encoders' frame rate)."""
    feats = [mfcc_features(audio, SAMPLE_RATE, frame_shift_ms=20.0)
             for audio in _kmeans_audio(cuts, max_cuts, crop_seconds)]
    x = torch.cat(feats)
    if x.shape[0] < num_clusters:
        raise ValueError(f"{x.shape[0]} MFCC frames are too few for {num_clusters} clusters")
    model = fit_kmeans(x, num_clusters, num_iters=30, seed=seed)
    log.info("MFCC k-means: %d clusters over %d frames, inertia/frame %.2f", num_clusters, x.shape[0], model.inertia(x) / x.shape[0])
    return model


# ---------------------------------------------------------------------------------------------
# checkpoints: exp_dir/checkpoint-<step>.pt (w2v.runtime.checkpoints)

CKPT_PREFIX = "checkpoint"


def list_checkpoints(exp_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``exp_dir``, oldest first."""
    return checkpoints.list_checkpoints(exp_dir, CKPT_PREFIX)


# ---------------------------------------------------------------------------------------------
# the loop


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1, then linear decay to 0 at ``total`` (fairseq's polynomial decay, power 1)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


_STATS = ("loss", "contrastive", "diversity", "feature_penalty", "quantizer_loss", "accuracy",
          "code_perplexity", "prob_perplexity", "temperature")


@dataclass
class PretrainResult:
    pretrainer: nn.Module
    history: list[dict]  # one entry per optimizer update: step + every stat
    last_checkpoint: Path | None


def make_labeler(cfg: PretrainConfig, cuts: CutSet, rt: Runtime, exp_dir: Path):
    """HuBERT / WavLM targets: k-means of MFCCs, or of a layer of ``label_checkpoint`` (fitted
    once by rank 0 into ``exp_dir/kmeans.pt``, or ``kmeans_path``); None for the other families."""
    if cfg.ssl_model not in ("hubert", "wavlm"):
        return None
    km_path = Path(cfg.kmeans_path) if cfg.kmeans_path else exp_dir / "kmeans.pt"
    teacher = None
    if cfg.label_checkpoint:
        from w2v.models import load_pretrained

        teacher, _ = load_pretrained(cfg.label_checkpoint)
        teacher = teacher.to(rt.device)
    if rt.is_main and not km_path.is_file():
        if teacher is None:
            km = fit_mfcc_kmeans(cuts, cfg.num_clusters, cfg.kmeans_max_cuts, cfg.crop_seconds, cfg.seed)
        else:
            km = fit_layer_kmeans(teacher, cfg.label_layer, cuts, cfg.num_clusters, cfg.kmeans_max_cuts,
                                  cfg.crop_seconds, cfg.seed)
        km.save(km_path)
    rt.barrier()
    if teacher is None:
        return MfccLabeler(KMeans.load(km_path), frame_shift_ms=20.0)
    return LayerLabeler(teacher, cfg.label_layer - 1, KMeans.load(km_path))


@dataclass
class Pretraining:
    """What the steps of one pretraining run share."""

    cfg: PretrainConfig
    rt: Runtime
    exp_dir: Path
    pretrainer: nn.Module
    model: nn.Module  # DDP around ``pretrainer`` with several processes
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    epoch: int = 0
    last: Path | None = None  # the newest checkpoint written or resumed from


def resume(run: Pretraining) -> None:
    """Continue from the newest ``checkpoint-<step>.pt`` that loads (at the next epoch)."""
    if run.rt.is_main:
        checkpoints.remove_stale_temporaries(run.exp_dir, CKPT_PREFIX)
    found = checkpoints.newest_loadable(run.exp_dir, serialization.load, CKPT_PREFIX)
    if found is None:
        return
    _, path, ckpt = found
    if ckpt.get("ssl_model") != run.cfg.ssl_model:
        raise ValueError(f"{path} is a {ckpt.get('ssl_model')!r} run, not {run.cfg.ssl_model!r}")
    run.pretrainer.load_state_dict(ckpt["pretrainer"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.step, run.epoch, run.last = int(ckpt["step"]), int(ckpt["epoch"]) + 1, path
    run.pretrainer.set_num_updates(run.step)
    log.info("Resumed from %s (step %d)", path, run.step)


def save_checkpoint(run: Pretraining) -> Path:
    """``checkpoint-<step>.pt``: the encoder as ``load_pretrained`` reads it, plus what resuming needs."""
    path = checkpoints.checkpoint_path(run.exp_dir, run.step, CKPT_PREFIX)
    atomic_torch_save(
        {
            "model": run.pretrainer.encoder.state_dict(),
            "config": run.pretrainer.encoder_config_dict(),
            "kind": run.pretrainer.encoder_kind,
            "ssl_model": run.cfg.ssl_model,
            "step": run.step,
            "epoch": run.epoch,
            "pretrainer": run.pretrainer.state_dict(),
            "objective": dataclasses.asdict(run.pretrainer.config),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "train_config": dataclasses.asdict(run.cfg),
        },
        path,
    )
    checkpoints.keep_last(run.exp_dir, run.cfg.keep_last, CKPT_PREFIX)
    run.last = path
    return path


def write_run_config(run: Pretraining) -> None:
    atomic_write_text(
        run.exp_dir / "config.json",
        json.dumps(
            {
                "train": dataclasses.asdict(run.cfg),
                "kind": run.pretrainer.encoder_kind,
                "encoder": run.pretrainer.encoder_config_dict(),
                "objective": dataclasses.asdict(run.pretrainer.config),
            },
            indent=2,
            default=list,
        ),
    )
    n_params = sum(p.numel() for p in run.pretrainer.encoder.parameters())
    log.info("%s/%s: encoder %.2fM parameters", run.cfg.ssl_model, run.cfg.size, n_params / 1e6)


def setup(cfg: PretrainConfig) -> tuple[Pretraining, CutSet]:
    rt = init_runtime(cfg.device, "bf16" if cfg.bf16 else cfg.amp)
    exp_dir = Path(cfg.exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    cuts = load_cuts(cfg.cuts, cfg.min_seconds)
    pretrainer = build_pretrainer(cfg, make_labeler(cfg, cuts, rt, exp_dir)).to(rt.device)
    params = [p for p in pretrainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else int(0.08 * cfg.num_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, cfg.num_steps))
    # Objectives leave some weights without a gradient in a step (masked-only paths, quantizers).
    run = Pretraining(cfg, rt, exp_dir, pretrainer, rt.wrap(pretrainer, find_unused_parameters=True),
                      params, optimizer, scheduler)
    return run, cuts


def train_one_epoch(run: Pretraining, loader: DataLoader, history: list[dict], writer, bar) -> int:
    """Updates until the loader is exhausted or ``num_steps`` is reached; returns the batches read."""
    cfg, rt = run.cfg, run.rt
    micro, batches, acc = 0, 0, {}
    for batch in loader:
        if run.step >= cfg.num_steps:
            break
        batches += 1
        micro += 1
        boundary = micro % cfg.accum_grad == 0
        ctx = run.model.no_sync() if (rt.world_size > 1 and not boundary) else contextlib.nullcontext()
        with ctx:
            with rt.autocast():
                out: PretrainOutput = run.model(batch["waveforms"].to(rt.device), batch["lengths"].to(rt.device))
            rt.backward(out.loss.float() / cfg.accum_grad)
        for name in _STATS:
            value = getattr(out, name)
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            acc[name] = acc.get(name, 0.0) + value / cfg.accum_grad
        if not boundary:
            continue
        grad_norm, _ = rt.clip_and_step(run.optimizer, run.params, cfg.grad_clip)
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.pretrainer.after_update(run.step)
        record = {"step": run.step, **acc, "lr": run.scheduler.get_last_lr()[0], "grad_norm": grad_norm}
        acc = {}
        history.append(record)
        if rt.is_main:
            _log_update(run, record, writer, bar)
            if run.step % cfg.save_every == 0:
                save_checkpoint(run)
    return batches


def _log_update(run: Pretraining, record: dict, writer, bar) -> None:
    step, cfg = run.step, run.cfg
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}")
    if writer is not None and (step % cfg.log_interval == 0 or step == 1):
        for name, value in record.items():
            if name != "step" and math.isfinite(value):
                writer.add_scalar(f"train/{name}", value, step)
    if step % cfg.log_interval == 0:
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"))


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Run (or resume) pretraining up to ``cfg.num_steps`` optimizer updates, on ``cfg.device``,
    in one process or one per rank under torchrun (w2v.runtime.context)."""
    if cfg.ssl_model not in SSL_MODELS:
        raise ValueError(f"Unknown ssl model {cfg.ssl_model!r}; expected one of {SSL_MODELS}")
    if not cfg.cuts:
        raise ValueError("No cut manifests given")
    cfg = dataclasses.replace(cfg, lr=default_lr(cfg))
    run, cuts = setup(cfg)
    resume(run)
    if run.rt.is_main:
        write_run_config(run)
    loader = make_dataloader(cuts, cfg, run.rt.world_size, run.rt.rank)
    writer = bar = None
    if run.rt.is_main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run.exp_dir / "tensorboard"))
    if run.rt.is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.num_steps, initial=run.step, desc=f"pretrain {cfg.ssl_model}", leave=False)
    history: list[dict] = []
    run.pretrainer.train()
    try:
        while run.step < cfg.num_steps:
            loader.sampler.set_epoch(run.epoch)
            if train_one_epoch(run, loader, history, writer, bar) == 0 and run.step < cfg.num_steps:
                raise ValueError(f"No batches from {list(cfg.cuts)} (all cuts shorter than {cfg.min_seconds} s?)")
            run.epoch += 1
        if run.rt.is_main and run.last != checkpoints.checkpoint_path(run.exp_dir, run.step, CKPT_PREFIX):
            save_checkpoint(run)
        run.rt.barrier()
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return PretrainResult(run.pretrainer, history, run.last)
