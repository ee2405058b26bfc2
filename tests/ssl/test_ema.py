import pytest
import torch
from torch import nn

from w2v.ssl.ema import EMATeacher, TauSchedule, data2vec_targets, instance_norm_over_time


def test_tau_schedule():
    s = TauSchedule()
    assert s(0) == pytest.approx(0.999)
    assert s(15_000) == pytest.approx(0.99945)
    assert s(30_000) == pytest.approx(0.9999)
    assert s(1_000_000) == pytest.approx(0.9999)


def test_ema_exact_weights_after_n_steps():
    student = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        student.weight.fill_(1.0)
        student.bias.fill_(0.0)
    sched = TauSchedule(0.5, 0.9, 2)  # taus 0.5, 0.7, 0.9, 0.9
    teacher = EMATeacher(student, sched, shared=lambda name: name == "bias")
    taus = []
    w_expected = 1.0
    for step, value in enumerate([3.0, 5.0, -1.0, 2.0]):
        with torch.no_grad():
            student.weight.fill_(value)
            student.bias.fill_(value)
        taus.append(teacher.update(student))
        w_expected = taus[-1] * w_expected + (1 - taus[-1]) * value
    assert taus == pytest.approx([0.5, 0.7, 0.9, 0.9])
    # 1 -> 2.0 -> 2.9 -> 2.51 -> 2.459
    assert w_expected == pytest.approx(2.459)
    assert torch.allclose(teacher.model.weight, torch.full((1, 2), 2.459))
    assert teacher.model.bias.item() == 2.0  # shared: copied
    assert not teacher.model.weight.requires_grad
    assert teacher.tau == pytest.approx(0.9)


def test_instance_norm_and_targets():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 3) * 4 + 2
    y = instance_norm_over_time(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 3), atol=1e-3)
    valid = torch.arange(10)[None] < torch.tensor([[10], [6]])
    ym = instance_norm_over_time(x, valid)
    assert torch.allclose(ym[1, :6], instance_norm_over_time(x[1:2, :6])[0], atol=1e-5)
    layers = [torch.randn(2, 10, 3) for _ in range(10)]
    t = data2vec_targets(layers, top_k=8)
    expected = sum(instance_norm_over_time(l) for l in layers[2:]) / 8
    assert torch.allclose(t, expected, atol=1e-6)
    assert torch.allclose(data2vec_targets(layers[:3], top_k=8), sum(instance_norm_over_time(l) for l in layers[:3]) / 3, atol=1e-6)
