"""The log-mel feature encoder (``feature_encoder="fbank"``): frames, values, padding, config checks,
and the SSL machinery (pretraining, checkpoints, feature extraction) running on it."""

from __future__ import annotations

import math

import pytest
import torch

import w2v.models as M
from w2v.models.config import fbank_layers


def _encoder(**kw) -> M.SSLEncoder:
    torch.manual_seed(0)
    return M.hubert_tiny(feature_encoder="fbank", conv_layers=fbank_layers(), **kw).eval()


def test_frames_follow_the_conv_formula_and_stack_two_windows():
    model = _encoder()
    assert (model.config.hop_samples, model.config.receptive_field) == (320, 560)
    for n in (560, 879, 880, 1199, 16000, 48000 + 17):
        feats, _ = model.feature_extractor(torch.randn(1, n), None)
        assert feats.shape == (1, model.config.num_frames(n), 160)
    # a 1 kHz tone: every window's loudest of the 80 mel bins is the one whose centre is nearest 1 kHz
    t = torch.arange(16000) / 16000
    feats, _ = model.feature_extractor(torch.sin(2 * math.pi * 1000 * t)[None], None)
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731 (HTK)
    centres = [700 * (10 ** (m / 2595) - 1) for m in torch.linspace(mel(20), mel(8000), 82)[1:-1].tolist()]
    nearest = min(range(80), key=lambda i: abs(centres[i] - 1000))
    first, second = feats[0, :, :80], feats[0, :, 80:]
    assert set(first.argmax(-1).tolist()) == {nearest} and set(second.argmax(-1).tolist()) == {nearest}
    # frame j = windows 2j and 2j+1: the second half of frame j is the window 10 ms after its first half
    x = torch.randn(1, 8000)
    a, _ = model.feature_extractor(x, None)
    b, _ = model.feature_extractor(x[:, 160:], None)
    torch.testing.assert_close(a[0, :, 80:][: b.shape[1]], b[0, :, :80], atol=1e-4, rtol=1e-4)


def test_padded_batch_gives_each_utterance_its_own_frames():
    model = _encoder(dropout=0.0, attention_dropout=0.0, dropout_input=0.0, layerdrop=0.0)
    x = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 9000])
    with torch.no_grad():
        layers, frames = model.extract_features(x, lengths)
        alone, _ = model.extract_features(x[1:, :9000], None)
    assert frames.tolist() == [model.config.num_frames(16000), model.config.num_frames(9000)]
    torch.testing.assert_close(layers[-1][1, : frames[1]], alone[-1][0], atol=1e-4, rtol=1e-4)
    assert not any(k.startswith("feature_extractor") for k in model.state_dict())  # nothing to learn


@pytest.mark.parametrize("layers", [((160, 400, 320),), ((80, 400, 160), (80, 3, 2)), ((161, 560, 320),)])
def test_other_layer_shapes_are_refused_with_the_expected_one(layers):
    with pytest.raises(ValueError, match=r"feature_encoder 'fbank' needs conv_layers .*\(\(160, 560, 320\),\)"):
        M.hubert_tiny(feature_encoder="fbank", conv_layers=layers)
    with pytest.raises(ValueError, match="feature_encoder must be 'conv' or 'fbank'"):
        M.hubert_tiny(feature_encoder="mfcc")


def test_three_stacked_windows():
    model = M.wav2vec2_tiny(feature_encoder="fbank", conv_layers=fbank_layers(40, 3))
    assert (model.config.hop_samples, model.config.receptive_field) == (480, 720)
    feats, lengths = model.feature_extractor(torch.randn(2, 5000), torch.tensor([5000, 3000]))
    assert feats.shape == (2, model.config.num_frames(5000), 120)
    assert lengths.tolist() == [model.config.num_frames(5000), model.config.num_frames(3000)]
