"""Checkpoint averaging (icefall's plain mean) and rebuilding a model from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from w2v.asr.frontend import load_model_state
from w2v.asr.model import KIND, AsrConfig, CtcConformer, build_model


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``"model"`` state dicts in ``paths``.

    Floating tensors are summed in float64 and cast back; integer buffers (e.g. counters) are
    taken from the first checkpoint, as averaging them means nothing.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    avg: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    for n, path in enumerate(paths):
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
        if n == 0:
            first = state
            avg = {k: v.to(torch.float64) for k, v in state.items() if v.is_floating_point()}
            continue
        if state.keys() != first.keys():
            raise ValueError(f"{path}: parameter names differ from {paths[0]}")
        for k in avg:
            avg[k] += state[k].to(torch.float64)
    out = {}
    for k, v in first.items():
        out[k] = (avg[k] / len(paths)).to(v.dtype) if k in avg else v.clone()
    return out


def load_checkpoint(path: str | Path) -> tuple[CtcConformer, AsrConfig]:
    """Model (eval mode) and config from one checkpoint, built from its stored config."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("kind") != KIND:
        raise ValueError(f"{path}: kind {ckpt.get('kind')!r} is not {KIND!r}")
    config = AsrConfig.from_dict(ckpt["config"])
    model = build_model(config)
    load_model_state(model, ckpt["model"], str(path))
    return model.eval(), config


def load_averaged(exp_dir: str | Path, epoch: int, avg: int = 1) -> tuple[CtcConformer, AsrConfig]:
    """Average ``epoch-(epoch-avg+1).pt`` .. ``epoch-<epoch>.pt`` and rebuild the model.

    The architecture comes from the config stored in ``epoch-<epoch>.pt`` (the checkpoints being
    averaged must share it). Returns the model in eval mode and its config.
    """
    if avg < 1 or epoch - avg + 1 < 1:
        raise ValueError(f"Cannot average {avg} checkpoints ending at epoch {epoch}")
    exp_dir = Path(exp_dir)
    paths = [exp_dir / f"epoch-{e}.pt" for e in range(epoch - avg + 1, epoch + 1)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Missing checkpoints: {missing}")
    model, config = load_checkpoint(paths[-1])
    for p in paths[:-1]:
        other = torch.load(p, map_location="cpu", weights_only=False)["config"]
        if AsrConfig.from_dict(other) != config:
            raise ValueError(f"{p}: model config differs from {paths[-1]}; cannot average")
    if avg > 1:
        load_model_state(model, average_checkpoints(paths), f"average of {paths}")
    return model.eval(), config
