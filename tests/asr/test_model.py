"""CtcConformer: shapes, out_lens formula, padding invariance, bad input, config round trip."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from w2v.asr.model import AsrConfig, build_model, subsampled_lengths, subsampling_for

TINY = dict(num_tokens=11, d_model=32, num_heads=4, num_layers=2, ffn_dim=64, conv_kernel=5,
            subsampling_channels=8, dropout=0.1)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(AsrConfig(**TINY)).eval()


@pytest.mark.parametrize("t,expected", [(7, 1), (8, 1), (9, 1), (10, 1), (11, 2), (100, 24),
                                        (101, 24), (103, 25), (6, 0), (1, 0)])
def test_subsampled_lengths_formula(t, expected):
    assert int(subsampled_lengths(torch.tensor(t))) == expected == max(((t - 1) // 2 - 1) // 2, 0)


def test_output_shapes_and_lengths(model):
    lens = torch.tensor([123, 100, 57, 11])
    lp, out_lens = model(torch.randn(4, 123, 80), lens)
    assert lp.shape == (4, 30, 11)
    assert out_lens.tolist() == [30, 24, 13, 2]
    # log-softmax: probabilities sum to one on every frame.
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(4, 30))


def test_padded_batch_equals_per_utterance(model):
    torch.manual_seed(1)
    lens = [97, 64, 31, 8]
    feats = [torch.randn(n, 80) for n in lens]
    batch = torch.full((4, 97, 80), -23.0)  # lhotse pads fbank with log(eps)
    for i, f in enumerate(feats):
        batch[i, : len(f)] = f
    lp, out_lens = model(batch, torch.tensor(lens))
    for i, f in enumerate(feats):
        single, n = model(f[None], torch.tensor([len(f)]))
        assert int(n) == int(out_lens[i])
        torch.testing.assert_close(lp[i, : int(n)], single[0], atol=2e-5, rtol=1e-5)


def test_padding_changes_nothing_but_real_frames_do(model):
    """The comparison above can fail: changing a valid frame does change the output."""
    x = torch.randn(1, 60, 80)
    a, _ = model(x, torch.tensor([60]))
    x2 = x.clone()
    x2[0, 30] += 5.0
    b, _ = model(x2, torch.tensor([60]))
    assert (a - b).abs().max() > 1e-3


def test_zero_and_short_inputs(model):
    lp, out_lens = model(torch.randn(3, 40, 80), torch.tensor([40, 5, 0]))
    assert out_lens.tolist() == [9, 0, 0]
    assert torch.isfinite(lp).all()
    lp, out_lens = model(torch.randn(2, 4, 80), torch.tensor([4, 3]))  # shorter than one window
    assert lp.shape[1] == 1 and out_lens.tolist() == [0, 0]


def test_bad_input_raises(model):
    with pytest.raises(ValueError, match=r"Found: \[2, 50\]"):
        model(torch.randn(2, 50), torch.tensor([50, 50]))
    with pytest.raises(ValueError, match="feature_lens"):
        model(torch.randn(2, 50, 80), torch.tensor([50]))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="divisible"):
        AsrConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="odd"):
        AsrConfig(conv_kernel=4)
    with pytest.raises(ValueError, match="Unknown"):
        AsrConfig.from_dict({"attention_dim": 512})
    cfg = AsrConfig(**TINY)
    assert AsrConfig.from_dict(asdict(cfg)) == cfg
    m1, m2 = build_model(cfg), build_model(asdict(cfg))
    assert [p.shape for p in m1.parameters()] == [p.shape for p in m2.parameters()]


@pytest.mark.parametrize("factor,t,expected", [(2, 100, 49), (2, 3, 1), (2, 2, 0), (2, 0, 0),
                                               (1, 37, 37), (4, 100, 24)])
def test_subsampled_lengths_per_factor(factor, t, expected):
    assert int(subsampled_lengths(torch.tensor(t), factor)) == expected


def test_subsampling_follows_the_frame_shift():
    assert [subsampling_for(s) for s in (0.01, 0.02, 0.04)] == [4, 2, 1]
    with pytest.raises(ValueError, match="30 ms frame shift"):
        subsampling_for(0.03)
    with pytest.raises(ValueError, match="subsampling must be one of"):
        AsrConfig(subsampling=3)


@pytest.mark.parametrize("factor", [2, 1])
def test_ssl_rate_front_ends_padded_batch_equals_per_utterance(factor):
    """20 ms (×2) and 40 ms (×1) input: 40 ms output frames, padding never leaks in."""
    torch.manual_seed(0)
    model = build_model(AsrConfig(**{**TINY, "feature_dim": 48, "subsampling": factor})).eval()
    lens = [51, 40, 9, 3]
    feats = [torch.randn(n, 48) for n in lens]
    batch = torch.zeros(4, 51, 48)
    for i, f in enumerate(feats):
        batch[i, : len(f)] = f
    lp, out_lens = model(batch, torch.tensor(lens))
    assert out_lens.tolist() == [subsampled_lengths(torch.tensor(n), factor).item() for n in lens]
    assert out_lens.tolist() == ([25, 19, 4, 1] if factor == 2 else lens)
    for i, f in enumerate(feats):
        single, n = model(f[None], torch.tensor([len(f)]))
        torch.testing.assert_close(lp[i, : int(n)], single[0], atol=2e-5, rtol=1e-5)
    # a real frame does change the output (the comparison above can fail)
    x = batch[:1].clone()
    x[0, 20] += 5.0
    assert (model(x, torch.tensor([51]))[0] - lp[:1]).abs().max() > 1e-3


def test_model_size_presets():
    from w2v.asr.model import build_model, model_config, num_parameters

    counts = {size: num_parameters(build_model(model_config(size, num_tokens=500))) / 1e6
              for size in ("demo", "medium", "large")}
    assert counts == pytest.approx({"demo": 2.22, "medium": 32.80, "large": 80.33}, abs=0.01)
    assert model_config("large", d_model=256, num_heads=4).d_model == 256
    with pytest.raises(ValueError, match="Unknown model size 'huge'"):
        model_config("huge")
