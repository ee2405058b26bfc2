import pytest
import torch

from w2v.models.quantizers import (
    ExponentialTemperature,
    GumbelVectorQuantizer,
    KmeansVectorQuantizer,
    LinearTemperature,
    perplexity,
)
from w2v.ssl.losses import diversity_loss


def test_linear_temperature_vq_wav2vec():
    sched = LinearTemperature.over_fraction(total_updates=1000, fraction=0.7)
    assert sched.anneal_updates == 700
    assert sched(0) == pytest.approx(2.0)
    assert sched(350) == pytest.approx(1.25)
    assert sched(700) == pytest.approx(0.5)
    assert sched(10_000) == pytest.approx(0.5)


def test_exponential_temperature_wav2vec2():
    sched = ExponentialTemperature(2.0, 0.5, 0.999995)
    assert sched(0) == 2.0
    assert sched(100_000) == pytest.approx(2.0 * 0.999995**100_000)
    assert sched(100_000) == pytest.approx(1.2131, abs=1e-4)
    # floor reached after log(0.25)/log(0.999995) ≈ 277k updates
    assert sched(277_000) > 0.5 and sched(278_000) == 0.5
    assert ExponentialTemperature(2.0, 0.1)(10**7) == 0.1


def test_perplexity_and_diversity_bounds():
    G, V = 2, 320
    uniform = torch.full((G, V), 1.0 / V)
    assert perplexity(uniform).item() == pytest.approx(G * V, rel=1e-5)
    assert diversity_loss(uniform).item() == pytest.approx(0.0, abs=1e-5)
    onehot = torch.zeros(G, V)
    onehot[:, 3] = 1
    assert perplexity(onehot).item() == pytest.approx(G, rel=1e-5)
    assert diversity_loss(onehot).item() == pytest.approx((G * V - G) / (G * V), rel=1e-5)
    # two equally used codewords per group: exp(H) = 2 per group
    p = torch.zeros(G, V)
    p[:, :2] = 0.5
    assert diversity_loss(p).item() == pytest.approx((G * V - 4) / (G * V), rel=1e-5)


def test_gumbel_forward_is_one_hot_and_gradient_flows():
    torch.manual_seed(0)
    q = GumbelVectorQuantizer(16, num_groups=2, num_vars=8, code_dim=12, temperature=LinearTemperature(2.0, 0.5, 10))
    x = torch.randn(3, 5, 16, requires_grad=True)
    out = q(x)
    assert out.quantized.shape == (3, 5, 12)
    books = q.codevectors.view(2, 8, 6)
    # every output group equals exactly one codeword
    qv = out.quantized.view(15, 2, 6)
    for g in range(2):
        d = (qv[:, g, None, :] - books[g][None]).abs().sum(-1)
        assert (d.min(dim=1).values < 1e-6).all()
    out.quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # soft sample gradients reach the input
    assert q.weight_proj.weight.grad.abs().sum() > 0
    # eval picks the argmax codeword, deterministically
    q.eval()
    a, b = q(x).codes, q(x).codes
    assert torch.equal(a, b)
    logits = q.weight_proj(x).view(15, 2, 8)
    assert torch.equal(a.view(15, 2), logits.argmax(-1))
    q.set_num_updates(5)
    assert q.temperature == pytest.approx(1.25)


def test_gumbel_statistics_ignore_padding():
    torch.manual_seed(1)
    q = GumbelVectorQuantizer(4, num_groups=1, num_vars=4, code_dim=4).eval()
    x = torch.randn(1, 6, 4)
    valid = torch.tensor([[True, True, True, False, False, False]])
    full = q(x[:, :3]).avg_probs
    masked = q(x, valid).avg_probs
    assert torch.allclose(full, masked, atol=1e-6)


def test_kmeans_quantizer_loss_and_straight_through():
    q = KmeansVectorQuantizer(4, num_groups=2, num_vars=2, gamma=0.25)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 2.0]]]))
    z = torch.tensor([[[0.2, -0.1, 1.5, 0.5], [0.9, 0.7, 0.0, 1.0]]], requires_grad=True)  # [1, 2, 4]
    out = q(z)
    assert out.codes.tolist() == [[[0, 0], [1, 1]]]
    expected_q = torch.tensor([[[0.0, 0.0, 2.0, 0.0], [1.0, 1.0, 0.0, 2.0]]])
    assert torch.allclose(out.quantized, expected_q)
    # ||sg(z) - q||^2 + 0.25 ||z - sg(q)||^2 averaged over elements = 1.25 * mean sq. error
    mse = (z.detach() - expected_q).pow(2).mean()
    assert out.commitment_loss.item() == pytest.approx(1.25 * mse.item(), rel=1e-6)
    # straight-through: d quantized / d z = identity
    (out.quantized * torch.arange(8.0).view(1, 2, 4)).sum().backward(retain_graph=True)
    assert torch.allclose(z.grad, torch.arange(8.0).view(1, 2, 4))
    # commitment loss: codebook gets grad of (q - z) terms, input gets gamma-weighted grad
    z.grad = None
    out.commitment_loss.backward()
    assert torch.allclose(z.grad, 0.25 * 2 * (z.detach() - expected_q) / 8, atol=1e-6)
    assert q.codebook.grad[0, 0].abs().sum() > 0
    assert out.code_perplexity.item() == pytest.approx(4.0, rel=1e-5)  # both codewords used in both groups
