"""k2 CTC loss == torch CTC loss (values and gradients) on the same batch."""

from __future__ import annotations

import math

import pytest
import torch

from w2v.asr.ctc import ctc_loss, k2_ctc_loss, torch_ctc_loss


def _batch(seed=0, b=6, t=60, v=20, peaked=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g) * (6.0 if peaked else 1.0)
    out_lens = torch.randint(t // 2, t + 1, (b,), generator=g)
    out_lens[2] = t  # unsorted lengths: the k2 path must re-sort and restore the order
    targets = [torch.randint(1, v, (int(torch.randint(1, 12, (1,), generator=g)),),
                             generator=g).tolist() for _ in range(b)]
    return logits.log_softmax(-1).double(), out_lens, targets


def test_k2_matches_torch_values_and_grads():
    lp, out_lens, targets = _batch()
    # Compare gradients w.r.t. the logits: torch's CTC backward assumes a log-softmax input
    # (it returns softmax - posterior), k2's is the plain derivative; both agree after it.
    x1 = lp.float().clone().requires_grad_(True)
    x2 = lp.float().clone().requires_grad_(True)
    a = k2_ctc_loss(x1.log_softmax(-1), out_lens, targets, output_beam=1e4)
    b = torch_ctc_loss(x2.log_softmax(-1), out_lens, targets)
    assert a.shape == b.shape == (6,)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    a.sum().backward()
    b.sum().backward()
    for i, n in enumerate(out_lens.tolist()):
        torch.testing.assert_close(x1.grad[i, :n], x2.grad[i, :n], rtol=1e-4, atol=1e-4)
    assert x1.grad.abs().max() > 0.1


def test_default_beam_exact_on_peaked_posteriors():
    """With a trained-model-like (peaked) distribution the training beam (10) is exact."""
    lp, out_lens, targets = _batch(seed=3, peaked=True)
    a = ctc_loss(lp.float(), out_lens, targets, "k2")
    b = ctc_loss(lp.float(), out_lens, targets, "torch")
    finite = torch.isfinite(b)
    torch.testing.assert_close(a[finite], b[finite], rtol=1e-5, atol=1e-3)


def test_single_path_value():
    """T=1, target [k]: the only alignment emits k, loss = -log p(k)."""
    lp = torch.log(torch.tensor([[[0.2, 0.5, 0.3]]]))
    for impl in ("k2", "torch"):
        loss = ctc_loss(lp, torch.tensor([1]), [[2]], impl)
        assert float(loss) == pytest.approx(-math.log(0.3), abs=1e-6)


def test_impossible_target_is_infinite():
    lp = torch.randn(2, 5, 4).log_softmax(-1)
    out_lens = torch.tensor([5, 2])
    targets = [[1, 2], [1, 1, 1]]  # "1 1 1" needs 5 frames (blanks between repeats)
    for impl in ("k2", "torch"):
        loss = ctc_loss(lp, out_lens, targets, impl)
        assert torch.isfinite(loss[0]) and torch.isinf(loss[1])


def test_unknown_impl_raises():
    with pytest.raises(ValueError, match="Unknown CTC"):
        ctc_loss(torch.zeros(1, 1, 2), torch.tensor([1]), [[1]], "warp")
