import pytest
import torch

from w2v.ssl.masking import apply_channel_mask, compute_channel_mask, compute_span_mask


def test_masked_fraction_matches_paper():
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask((64, 2000), mask_prob=0.065, mask_length=10, generator=g)
    frac = mask.float().mean().item()
    # Independent starts would give 1 - (1 - p)^M = 0.4890; the paper quotes ~49 %.
    assert abs(frac - (1 - (1 - 0.065) ** 10)) < 0.01, frac
    # HuBERT's p = 0.08 masks more.
    mask = compute_span_mask((64, 2000), mask_prob=0.08, mask_length=10, generator=g)
    assert abs(mask.float().mean().item() - (1 - 0.92**10)) < 0.015


def test_spans_are_runs_of_at_least_M():
    g = torch.Generator().manual_seed(1)
    mask = compute_span_mask((8, 500), 0.02, 10, generator=g)
    for row in mask:
        x = row.long().tolist()
        runs, cur = [], 0
        for v in x + [0]:
            if v:
                cur += 1
            elif cur:
                runs.append(cur)
                cur = 0
        assert runs and min(runs) >= 10


def test_padding_never_masked_and_lengths_respected():
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([300, 120, 37, 5, 0])
    mask = compute_span_mask((5, 300), 0.065, 10, lengths=lengths, min_masks=2, generator=g)
    for b, n in enumerate(lengths.tolist()):
        assert not mask[b, n:].any()
    # rows that can hold a span get at least min_masks spans worth of steps
    assert mask[1].sum() >= 10 and mask[2].sum() >= 10
    # a row shorter than one span is masked within its length only
    assert 0 < mask[3].sum() <= 5
    assert mask[4].sum() == 0
    # fraction over the valid part of long rows is still ~49 %
    lengths = torch.randint(200, 400, (200,), generator=g)
    mask = compute_span_mask((200, 400), 0.065, 10, lengths=lengths, generator=g)
    valid = torch.arange(400)[None] < lengths[:, None]
    assert not (mask & ~valid).any()
    frac = (mask.sum() / valid.sum()).item()
    assert 0.45 < frac < 0.52, frac


def test_seeded_masks_reproducible_and_zero_prob():
    a = compute_span_mask((3, 100), 0.065, 10, generator=torch.Generator().manual_seed(5))
    b = compute_span_mask((3, 100), 0.065, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not compute_span_mask((3, 100), 0.0, 10).any()
    with pytest.raises(ValueError):
        compute_span_mask((3, 100), 1.5, 10)


def test_channel_mask():
    g = torch.Generator().manual_seed(3)
    mask = compute_channel_mask(4, 768, 0.008, 64, generator=g)
    assert mask.shape == (4, 768)
    x = torch.ones(4, 7, 768)
    y = apply_channel_mask(x, mask)
    assert torch.equal(y[:, 0, :] == 0, mask)
    assert torch.equal(y[:, 3, :] == 0, mask)
