"""w2v.models.kernels: every path gives F.linear's values; the choice is made in one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import w2v.models as M
from w2v.models import kernels

REPO = Path(__file__).resolve().parents[2]
needs_onednn = pytest.mark.skipif(not kernels._onednn_available(), reason="this torch has no oneDNN linear op")


def _reference(x, weight, bias, gelu):
    """The plain path, written out: what every other path must equal."""
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return torch.nn.Linear(48, 80)


@pytest.mark.parametrize("setting", ["0", "1", ""])
@pytest.mark.parametrize("gelu", [False, True])
def test_fp32_paths_equal_f_linear(monkeypatch, layer, setting, gelu):
    monkeypatch.setenv(kernels.ENV, setting)
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        want = _reference(x, layer.weight, layer.bias, gelu)
        torch.testing.assert_close(kernels.linear(x, layer.weight, layer.bias, gelu), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(kernels.linear(x, layer.weight, None, gelu), _reference(x, layer.weight, None, gelu),
                                   atol=1e-5, rtol=1e-5)


@needs_onednn
def test_onednn_training_path_gives_f_linear_values_and_gradients(monkeypatch, layer):
    monkeypatch.setenv(kernels.ENV, "1")
    x = torch.randn(3, 7, 48, requires_grad=True)
    g = torch.randn(3, 7, 80)
    y = kernels.linear(x, layer.weight, layer.bias)
    assert "OneDNN" in type(y.grad_fn).__name__
    got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    y_ref = F.linear(x, layer.weight, layer.bias)
    want = torch.autograd.grad(y_ref, (x, layer.weight, layer.bias), g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("gelu", [False, True])
def test_bf16_autocast_cached_weights_equal_autocast_f_linear(monkeypatch, layer, gelu):
    monkeypatch.setenv(kernels.ENV, "1")
    x = torch.randn(3, 7, 48)

    def both():
        # autocast keeps its own casts for as long as its context: a fresh context per comparison
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return kernels.linear(x, layer.weight, layer.bias, gelu), _reference(x, layer.weight, layer.bias, gelu)

    got, want = both()
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)
    with torch.no_grad():  # a weight changed in place is cast again, not served stale from the cache
        layer.weight.mul_(2.0)
    got, want = both()
    torch.testing.assert_close(got.float(), want.float(), atol=4e-2, rtol=2e-2)
    # with autograd the cast copies (which have no gradient) are not used
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = kernels.linear(x, layer.weight, layer.bias, gelu)
    y.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "vendor, setting, onednn",
    [("AuthenticAMD", None, True), ("GenuineIntel", None, False), ("", None, False),
     ("GenuineIntel", "1", True), ("AuthenticAMD", "0", False)],
)
def test_choice_follows_the_cpu_vendor_unless_overridden(monkeypatch, vendor, setting, onednn):
    monkeypatch.setattr(kernels, "_cpu_vendor", lambda: vendor)
    monkeypatch.setattr(kernels, "_onednn_available", lambda: True)
    kernels._onednn_fp32.cache_clear()
    try:
        assert kernels._onednn_fp32(setting) is onednn
        assert kernels._fast(setting) is (setting != "0")
    finally:
        kernels._onednn_fp32.cache_clear()


def test_a_bad_override_is_refused(monkeypatch, layer):
    monkeypatch.setenv(kernels.ENV, "yes")
    with pytest.raises(ValueError, match="W2V_FAST_LINEAR must be 0 or 1"):
        kernels.linear(torch.randn(2, 48), layer.weight, layer.bias)


def test_cpu_vendor_reads_cpuinfo():
    info = Path("/proc/cpuinfo")
    if not info.exists():
        assert kernels._cpu_vendor() == ""
        return
    match = re.search(r"^vendor_id\s*:\s*(\S+)", info.read_text(), re.MULTILINE)
    assert kernels._cpu_vendor() == (match.group(1) if match else "")


def test_kernel_choices_live_in_kernels_only():
    """No other module reaches for private ops, autocast internals or the override."""
    pattern = re.compile(r"mkldnn|_linear_pointwise|get_autocast_dtype|W2V_FAST_LINEAR|USE_FAST|weakref")
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "w2v").rglob("*.py"))
        if path.name != "kernels.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_whole_encoder_same_values_and_gradients_on_every_path(monkeypatch):
    def run(setting):
        monkeypatch.setenv(kernels.ENV, setting)
        torch.manual_seed(0)
        model = M.wav2vec2_tiny()
        out, _ = model(torch.linspace(-1, 1, 2 * 6000).view(2, 6000).sin())
        out.pow(2).mean().backward()
        with torch.no_grad():
            inference, _ = model.eval()(torch.linspace(-1, 1, 2 * 6000).view(2, 6000).cos())
        return out.detach(), inference, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain_out, plain_inf, plain_grads = run("0")
    fast_out, fast_inf, fast_grads = run("1")
    torch.testing.assert_close(fast_out, plain_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fast_inf, plain_inf, atol=2e-5, rtol=1e-4)
    assert len(fast_grads) == len(plain_grads) > 20
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)
