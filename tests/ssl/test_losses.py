import math

import pytest
import torch
import torch.nn.functional as F

from w2v.ssl.future_prediction import FuturePredictionLoss
from w2v.ssl.losses import (
    codeword_logits,
    contrastive_logits,
    contrastive_loss,
    feature_penalty,
    masked_prediction_loss,
    regression_loss,
    sample_masked_negatives,
    wav2vec2_contrastive_loss,
)


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_contrastive_loss_matches_paper_formula():
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    q = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    negs = torch.tensor([[[0.0, 1.0], [-1.0, 0.5]], [[3.0, 1.0], [1.0, 1.0]]])
    logits = contrastive_logits(c, q, negs, temperature=0.1)
    out = contrastive_loss(logits)
    expected = 0.0
    for t in range(2):
        sims = [cos(c[t].tolist(), q[t].tolist())] + [cos(c[t].tolist(), n.tolist()) for n in negs[t]]
        num = math.exp(sims[0] / 0.1)
        den = sum(math.exp(s / 0.1) for s in sims)
        expected += -math.log(num / den)
    assert out.loss.item() == pytest.approx(expected / 2, rel=1e-5)
    # utterance 0: cos(c,q)=0.707 beats 0 and -0.894; utterance 1: -0.707 loses to 0.316
    assert out.accuracy.item() == pytest.approx(0.5)


def test_distractor_equal_to_positive_is_excluded():
    c = torch.tensor([[1.0, 0.0]])
    q = torch.tensor([[1.0, 1.0]])
    negs = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # first distractor == positive
    logits = contrastive_logits(c, q, negs, 0.1)
    assert logits[0, 1] == float("-inf")
    s0, s2 = cos([1, 0], [1, 1]) / 0.1, cos([1, 0], [0, 1]) / 0.1
    expected = -math.log(math.exp(s0) / (math.exp(s0) + math.exp(s2)))
    assert contrastive_loss(logits).loss.item() == pytest.approx(expected, rel=1e-3)


def test_negatives_come_from_other_masked_steps_of_same_utterance():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[0, 5:20] = True
    mask[1, 30:33] = True
    mask[2, 7] = True  # single masked step: no distractor available
    index, valid = sample_masked_negatives(mask, 100, g)
    rows = torch.arange(3)[:, None].expand_as(mask)[mask]
    n = int(mask.sum())
    assert index.shape == (n, 100)
    assert (rows[index] == rows[:, None]).all()  # same utterance
    self_hit = index == torch.arange(n)[:, None]
    assert not self_hit[valid].any()  # never the step itself
    assert not valid[rows == 2].any() and valid[rows != 2].all()
    # uniform over the 14 others of row 0
    counts = torch.bincount(index[rows == 0].flatten(), minlength=n)[:15].float()
    assert (counts[counts > 0].numel() == 15) and counts.max() / counts[counts > 0].min() < 1.5


def test_wav2vec2_contrastive_on_tensors():
    torch.manual_seed(0)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, 3:15] = True
    mask[1, 10:25] = True
    q = torch.randn(2, 30, 8)
    # perfect predictions give a low loss and full accuracy; random ones don't
    good = wav2vec2_contrastive_loss(q * 3, q, mask, num_negatives=20, generator=torch.Generator().manual_seed(1))
    bad = wav2vec2_contrastive_loss(torch.randn(2, 30, 8), q, mask, num_negatives=20, generator=torch.Generator().manual_seed(1))
    assert good.accuracy.item() == 1.0
    assert good.loss.item() < 1.0 < bad.loss.item()
    assert good.logits.shape == (27, 21)
    # recompute the formula on the drawn distractors
    index, valid = sample_masked_negatives(mask, 20, torch.Generator().manual_seed(1))
    qm = q[mask]
    sims = F.cosine_similarity(qm[:, None], torch.cat([qm[:, None], qm[index]], 1), dim=-1) / 0.1
    expected = (torch.logsumexp(sims, 1) - sims[:, 0]).mean()
    assert good.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_penalty_and_regression_and_hubert_logits():
    f = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert feature_penalty(f).item() == pytest.approx(7.5)
    assert feature_penalty(f, torch.tensor([[True, False]])).item() == pytest.approx(2.5)
    p, t = torch.tensor([0.0, 2.0]), torch.tensor([0.5, 0.0])
    assert regression_loss(p, t, 0.0).item() == pytest.approx((0.25 + 4) / 2)
    # smooth L1, beta=1: 0.5 * 0.25 for |d|<1, |d| - 0.5 otherwise
    assert regression_loss(p, t, 1.0).item() == pytest.approx((0.125 + 1.5) / 2)
    proj = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    logits = codeword_logits(proj, emb, 0.1)
    assert torch.allclose(logits, torch.tensor([[10.0, 7.0710678, 0.0], [0.0, 7.0710678, -10.0]]), atol=1e-5)
    loss, acc = masked_prediction_loss(logits, torch.tensor([0, 2]))
    expected = (-(10 - math.log(math.exp(10) + math.exp(7.0710678) + 1))
                - (-10 - math.log(1 + math.exp(7.0710678) + math.exp(-10)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert acc.item() == 0.5


def test_future_prediction_loss_matches_formula():
    torch.manual_seed(0)
    B, T, C, D, K, N = 2, 7, 3, 4, 3, 2
    crit = FuturePredictionLoss(C, D, num_steps=K, num_negatives=N, offset=1)
    c, z = torch.randn(B, T, C), torch.randn(B, T, D)
    lengths = torch.tensor([7, 5])
    neg = torch.randint(0, 5, (B, T, N))
    out = crit(c, z, lengths, negative_index=neg, reduction="sum")
    W = crit.project_to_steps.weight.view(K, D, C)
    bias = crit.project_to_steps.bias.view(K, D)
    total, count = 0.0, 0
    for b in range(B):
        for k in range(1, K + 1):
            for i in range(int(lengths[b]) - k):
                h = W[k - 1] @ c[b, i] + bias[k - 1]
                total -= F.logsigmoid(z[b, i + k] @ h).item()
                for n in range(N):
                    total -= F.logsigmoid(-(z[b, neg[b, i, n]] @ h)).item()
                count += 1
    assert out.num_predictions == count == (6 + 5 + 4) + (4 + 3 + 2)
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    mean = crit(c, z, lengths, negative_index=neg)
    assert mean.loss.item() == pytest.approx(total / count, rel=1e-5)
    # offset shifts every target by offset - 1 frames
    crit.offset = 3
    assert crit(c, z, None, negative_index=neg).num_predictions == B * ((7 - 3) + (7 - 4) + (7 - 5))
