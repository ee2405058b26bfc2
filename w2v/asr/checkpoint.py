"""Checkpoint averaging (icefall's plain mean) and rebuilding a model from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch

from w2v import serialization
from w2v.asr.frontend import load_model_state
from w2v.asr.model import KIND, AsrConfig, CtcConformer, build_model


def _mean_states(states: Iterable[tuple[str, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of ``(source, state dict)`` pairs, read one at a time."""
    avg: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    n = 0
    for source, state in states:
        if n == 0:
            first, first_source = state, source
            avg = {k: v.to(torch.float64) for k, v in state.items() if v.is_floating_point()}
        else:
            if state.keys() != first.keys():
                raise ValueError(f"{source}: parameter names differ from {first_source}")
            for k in avg:
                avg[k] += state[k].to(torch.float64)
        n += 1
    if n == 0:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    return {k: (avg[k] / n).to(v.dtype) if k in avg else v.clone() for k, v in first.items()}


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``"model"`` state dicts in ``paths``.

    Floating tensors are summed in float64 and cast back; integer buffers (e.g. counters) are
    taken from the first checkpoint, as averaging them means nothing.
    """
    return _mean_states((str(p), serialization.load(p)["model"]) for p in paths)


def _read(path: str | Path) -> tuple[dict, AsrConfig]:
    ckpt = serialization.load(path)
    if ckpt.get("kind") != KIND:
        raise ValueError(f"{path}: kind {ckpt.get('kind')!r} is not {KIND!r}")
    return ckpt, AsrConfig.from_dict(ckpt["config"])


def load_checkpoint(path: str | Path) -> tuple[CtcConformer, AsrConfig]:
    """Model (eval mode) and config from one checkpoint, built from its stored config."""
    ckpt, config = _read(path)
    model = build_model(config)
    load_model_state(model, ckpt["model"], str(path))
    return model.eval(), config


def load_averaged(exp_dir: str | Path, epoch: int, avg: int = 1) -> tuple[CtcConformer, AsrConfig]:
    """Average ``epoch-(epoch-avg+1).pt`` .. ``epoch-<epoch>.pt`` and rebuild the model.

    The checkpoints being averaged must share one config (the model's architecture). Each file is
    read once; the model is built and loaded once (a frozen SSL encoder is restored only then).
    Returns the model in eval mode and its config.
    """
    if avg < 1 or epoch - avg + 1 < 1:
        raise ValueError(f"Cannot average {avg} checkpoints ending at epoch {epoch}")
    exp_dir = Path(exp_dir)
    paths = [exp_dir / f"epoch-{e}.pt" for e in range(epoch - avg + 1, epoch + 1)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Missing checkpoints: {missing}")
    configs: list[AsrConfig] = []

    def states():
        for p in paths:
            ckpt, config = _read(p)
            if configs and config != configs[0]:
                raise ValueError(f"{p}: model config differs from {paths[0]}; cannot average")
            configs.append(config)
            yield str(p), ckpt["model"]

    state = _mean_states(states())
    model = build_model(configs[-1])
    load_model_state(model, state, str(paths[-1]) if avg == 1 else f"average of {[str(p) for p in paths]}")
    return model.eval(), configs[-1]


def export_averaged(exp_dir: str | Path, epoch: int, avg: int, out: str | Path) -> Path:
    """Write the average of epochs ``epoch-avg+1..epoch`` as a model-only checkpoint.

    ``{"model", "config", "kind", "epoch", "avg", "averaged_from"}``: no optimizer state (a third
    of an epoch file for Adam), loaded by :func:`load_checkpoint` and by ``w2v.bin.decode
    --checkpoint`` without the epoch files, which ``--keep-last-k`` may later remove.
    """
    from dataclasses import asdict

    from w2v.asr.frontend import checkpoint_state
    from w2v.utils import atomic_torch_save

    model, config = load_averaged(exp_dir, epoch, avg)
    atomic_torch_save({
        "model": checkpoint_state(model), "config": asdict(config), "kind": KIND, "epoch": epoch,
        "avg": avg, "averaged_from": [f"epoch-{e}.pt" for e in range(epoch - avg + 1, epoch + 1)],
    }, out)
    return Path(out)
