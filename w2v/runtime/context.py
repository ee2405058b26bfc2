"""Where a training loop runs: device, mixed precision and processes (torchrun / DDP).

:func:`init_runtime` reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``; with
``--nnodes`` too) and returns a :class:`Runtime`:

- device: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; ``cuda`` is
  ``cuda:LOCAL_RANK``; ``cpu`` or ``cuda:N`` as given.
- processes: with ``WORLD_SIZE > 1`` the default process group, nccl on CUDA and gloo on the CPU;
  one code path for both, so the CPU tests under ``torchrun --nproc_per_node 2`` exercise what a
  GPU run does.
- mixed precision: ``bf16`` autocast (CPU and CUDA; weights, gradients and optimizer stay fp32),
  ``fp16`` autocast with a gradient scaler (CUDA only), or ``none``.

Training loops call :meth:`Runtime.autocast`, :meth:`Runtime.backward`,
:meth:`Runtime.clip_and_step`, :meth:`Runtime.wrap` and :meth:`Runtime.all_reduce_sum` and stay
free of device and process plumbing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` / ``cuda`` / ``cpu`` / ``cuda:N`` → a device; bare CUDA means ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: this torch sees no CUDA device "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@dataclass
class Runtime:
    device: torch.device
    world_size: int = 1
    rank: int = 0
    amp: str = "none"
    scaler: Optional["torch.amp.GradScaler"] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """The forward pass (and loss) under the chosen mixed precision; a no-op for ``none``."""
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """DDP around ``model`` when there are several processes; ``model`` itself otherwise."""
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                   find_unused_parameters=find_unused_parameters)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip_and_step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor],
                      max_norm: float) -> tuple[float, bool]:
        """Clip the gradients to ``max_norm`` and step; returns (gradient norm, whether it stepped).

        A non-finite gradient norm skips the update. Under fp16 that is the scaler's normal work
        (it lowers the scale); otherwise it is a sign of trouble the caller counts.
        """
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = float(nn.utils.clip_grad_norm_(list(params), max_norm))
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped by the scaler itself when the norm is inf/nan
            self.scaler.update()
            return norm, math.isfinite(norm)
        if math.isfinite(norm):
            optimizer.step()
            return norm, True
        return norm, False

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all processes (the values themselves with one process)."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Wait for every process, then end the process group: a process that exits while the group
        (gloo's threads) lives aborts with 'terminate called without an active exception'."""
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def end_process_group() -> None:
    """For entry points under torchrun: :meth:`Runtime.close` of whatever group this process is in."""
    if dist.is_initialized():
        Runtime(torch.device("cpu"), dist.get_world_size(), dist.get_rank()).close()


def init_runtime(device: str = "auto", amp: str = "none") -> Runtime:
    """The runtime of this process (see the module docstring); initialises the process group."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if amp == "fp16" and dev.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (use bf16 on the CPU)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    if rank == 0:
        log.info("runtime: %s, %d process(es), amp %s", dev, world_size, amp)
    return Runtime(dev, world_size, rank, amp, scaler)
