"""data2vec teacher: an exponential moving average of the student, and its regression targets.

``teacher <- tau * teacher + (1 - tau) * student`` after every update, with ``tau`` rising linearly
from 0.999 to 0.9999 over the first 30k updates and constant afterwards. Parameters the paper shares
between student and teacher (feature encoder, positional conv for speech) are copied, not averaged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TauSchedule:
    """Linear ramp ``start -> end`` over ``ramp_updates``, then ``end``."""

    start: float = 0.999
    end: float = 0.9999
    ramp_updates: int = 30_000

    def __call__(self, num_updates: int) -> float:
        if num_updates >= self.ramp_updates or self.ramp_updates <= 0:
            return self.end
        return self.start + (self.end - self.start) * max(num_updates, 0) / self.ramp_updates


class EMATeacher(nn.Module):
    """A frozen copy of ``student`` moved towards it by :meth:`update`.

    Args:
        student: the module to follow.
        schedule: ``num_updates -> tau``.
        shared: predicate on parameter/buffer names; matching tensors are copied from the student
            on every update instead of being averaged.
    """

    def __init__(self, student: nn.Module, schedule: TauSchedule = TauSchedule(), shared: Callable[[str], bool] | None = None):
        super().__init__()
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()
        self.schedule = schedule
        self.shared = shared or (lambda name: False)
        self.num_updates = 0
        self.tau = schedule(0)

    def train(self, mode: bool = True):  # the teacher never uses dropout
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """One EMA step with the current ``tau``; returns the tau used."""
        tau = self.schedule(self.num_updates)
        teacher_params = dict(self.model.named_parameters())
        for name, p in student.named_parameters():
            t = teacher_params[name]
            if self.shared(name):
                t.copy_(p.detach())
            else:
                t.mul_(tau).add_(p.detach().to(t.dtype), alpha=1.0 - tau)
        teacher_buffers = dict(self.model.named_buffers())
        for name, b in student.named_buffers():
            teacher_buffers[name].copy_(b)
        self.num_updates += 1
        self.tau = self.schedule(self.num_updates)
        return tau

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates = num_updates
        self.tau = self.schedule(num_updates)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.model(*args, **kwargs)


def instance_norm_over_time(x: Tensor, valid: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise every channel of ``x: [batch, frames, dim]`` to zero mean, unit variance over valid frames."""
    xf = x.float()
    if valid is None:
        mean = xf.mean(dim=1, keepdim=True)
        var = xf.var(dim=1, unbiased=False, keepdim=True)
    else:
        w = valid[:, :, None].to(xf.dtype)
        count = w.sum(dim=1, keepdim=True).clamp_min(1.0)
        mean = (xf * w).sum(dim=1, keepdim=True) / count
        var = ((xf - mean).pow(2) * w).sum(dim=1, keepdim=True) / count
    return (xf - mean) / torch.sqrt(var + eps)


def data2vec_targets(layer_outputs: Sequence[Tensor], top_k: int = 8, valid: Tensor | None = None) -> Tensor:
    """Mean of the top-``k`` layers' outputs, each instance-normalised over time.

    Args:
        layer_outputs: per-block outputs ``[batch, frames, dim]`` (data2vec uses the FFN output
            before the last residual), first block first.
        top_k: K (8 for BASE); uses all layers if there are fewer.
        valid: optional ``[batch, frames]`` valid frames.

    Returns:
        ``[batch, frames, dim]`` float targets.
    """
    if not layer_outputs:
        raise ValueError("No layer outputs to build data2vec targets from")
    top = list(layer_outputs)[-top_k:]
    return sum(instance_norm_over_time(x, valid) for x in top) / len(top)
