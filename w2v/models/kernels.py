"""Which CPU kernel runs the encoders' linear layers: the one choice behind :func:`linear`.

Every matrix product of the wav2vec-family encoders (the Transformer's linears, the feature
projection, the feature encoder's convolutions as products over windows) goes through
:func:`linear`, which gives ``F.linear`` (+ GELU)'s values on one of three paths:

- **plain**: ``F.linear`` then ``F.gelu``, torch's own kernels (MKL's GEMM for fp32 on x86). The
  reference every other path is tested against; always taken off the CPU and for float64.
- **oneDNN fp32**: ``torch.ops.mkldnn._linear_pointwise`` (a private op, probed once), GELU fused
  into the GEMM; with autograd, both backward GEMMs on oneDNN as well. Taken where it beats MKL:
  on AMD CPUs (``vendor_id`` AuthenticAMD), not on Intel ones, where MKL is as fast or faster
  (bench/bench_wav2vec2.py prints both; README.md has the figures and the CPUs).
- **cached low-precision weights** under CPU autocast without autograd: autocast casts every
  weight again on every call; here each parameter's bf16/fp16 copy is kept until the parameter
  changes in place or is freed.

``W2V_FAST_LINEAR`` overrides the choice, for benchmarks and for checking a new CPU: ``0`` takes the
plain path everywhere, ``1`` the oneDNN and cached paths on every CPU that has the op; unset, the
choice above. It is read on every call, so a benchmark can flip it between runs.
"""

from __future__ import annotations

import functools
import os
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENV = "W2V_FAST_LINEAR"

# CPUs whose fp32 GEMM is faster through oneDNN's matmul than through MKL's (README: Benchmarks).
ONEDNN_VENDORS = ("AuthenticAMD",)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, gelu: bool = False) -> Tensor:
    """``F.linear(x, weight, bias)``, followed by the exact (erf) GELU when ``gelu``.

    Args:
        x: ``[..., in_features]``.
        weight: ``[out_features, in_features]``.
        bias: ``[out_features]`` or None.
        gelu: apply GELU to the output (fused into the GEMM where the kernel allows).
    Returns:
        ``[..., out_features]``, differentiable on every path.
    """
    if x.device.type == "cpu" and x.numel() > 0 and _fast(os.environ.get(ENV)):
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, bias)
        )
        if torch.is_autocast_enabled("cpu"):
            if not needs_grad:
                return _cached_low_precision_linear(x, weight, bias, gelu)
        elif x.dtype == weight.dtype == torch.float32 and _onednn_fp32(os.environ.get(ENV)):
            if not needs_grad:
                return _onednn_linear(x, weight, bias, "gelu" if gelu else "none")
            y = _OneDNNLinear.apply(x, weight, bias)
            return F.gelu(y) if gelu else y
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


# --------------------------------------------------------------------------------------------
# The decision, made once per value of W2V_FAST_LINEAR


def _parse(setting: str | None) -> bool | None:
    """``W2V_FAST_LINEAR``: "0" → False, "1" → True, unset or empty → None (decide by CPU)."""
    if setting in (None, ""):
        return None
    if setting not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1 (or unset); found {setting!r}")
    return setting == "1"


@functools.lru_cache(maxsize=None)
def _fast(setting: str | None) -> bool:
    """Any path other than the plain one is allowed."""
    return _parse(setting) is not False


@functools.lru_cache(maxsize=None)
def _onednn_fp32(setting: str | None) -> bool:
    """fp32 linears go to oneDNN: forced by the setting, else where the CPU vendor gains from it."""
    forced = _parse(setting)
    wanted = _cpu_vendor() in ONEDNN_VENDORS if forced is None else forced
    return wanted and _onednn_available()


@functools.lru_cache(maxsize=None)
def _cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (``AuthenticAMD``, ``GenuineIntel``); "" where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return ""


@functools.lru_cache(maxsize=None)
def _onednn_available() -> bool:
    """The private op exists in this torch build and computes a product."""
    try:
        y = _onednn_linear(torch.ones(2, 3), torch.ones(4, 3), None, "none")
        return bool(torch.allclose(y, torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError):
        return False


# --------------------------------------------------------------------------------------------
# The paths


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    """``x @ weight.T + bias`` (then ``activation``: "none" or "gelu") through oneDNN's fp32 matmul."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "none" if activation == "gelu" else "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` whose forward and both backward GEMMs run on oneDNN (CPU, fp32)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias, "none")

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).contiguous()  # [N, out]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # [N, out] @ [out, in]
            grad_x = _onednn_linear(g, weight.t().contiguous(), None, "none").view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:  # [out, N] @ [N, in]
            grad_w = _onednn_linear(g.t().contiguous(), x.reshape(-1, x.shape[-1]).t().contiguous(), None, "none")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def _cached_low_precision_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool) -> Tensor:
    """What autocast computes (product in its dtype), with the weights cast once, not per call."""
    dtype = torch.get_autocast_dtype("cpu")
    w = _low_precision(weight, dtype)
    b = None if bias is None else _low_precision(bias, dtype)
    with torch.autocast("cpu", enabled=False):
        y = F.linear(x.to(dtype), w, b)
        return torch.ops.aten.gelu_(y) if gelu else y


_LOW_PRECISION: dict[int, tuple[weakref.ref, int, torch.dtype, Tensor]] = {}
"""id(parameter) → (weak reference to it, its version when cast, dtype, the cast copy)."""


def _low_precision(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """The ``dtype`` copy of a parameter, refreshed when the parameter changes in place, dropped
    when it is freed; any other tensor is cast on the spot."""
    if not isinstance(weight, nn.Parameter) or weight.is_inference():
        return weight.to(dtype)
    key = id(weight)
    cached = _LOW_PRECISION.get(key)
    if cached is None or cached[0]() is not weight or cached[1] != weight._version or cached[2] != dtype:
        ref = weakref.ref(weight, lambda _, key=key: _LOW_PRECISION.pop(key, None))
        cached = (ref, weight._version, dtype, weight.detach().to(dtype))
        _LOW_PRECISION[key] = cached
    return cached[3]


__all__ = ["ENV", "ONEDNN_VENDORS", "linear"]
