import math

import pytest
import torch

from w2v.models.wav2vec import Wav2VecConfig, wav2vec_base, wav2vec_large, wav2vec_model, wav2vec_tiny


def test_base_shapes_and_fairseq_api():
    torch.manual_seed(0)
    model = wav2vec_base().eval()
    wav = torch.randn(1, 16000)
    z = model.feature_extractor(wav)
    c = model.feature_aggregator(z)
    assert z.shape == (1, 512, 98)  # 10 ms frames
    assert c.shape == (1, 512, 98)
    assert model.config.hop_samples == 160
    assert len(model.feature_aggregator.conv_layers) == 9


def test_large_structure():
    model = wav2vec_large()
    assert [b.kernel for b in model.feature_aggregator.conv_layers] == list(range(2, 14))
    assert len(model.feature_extractor.conv_layers) == 7
    assert model.config.context_skip_connections and model.config.encoder_skip_connections
    z = model.feature_extractor(torch.randn(1, 4000))
    assert model.feature_aggregator(z).shape == z.shape


def test_encoder_receptive_field_and_context_causality(monkeypatch):
    # The one-group norms pool statistics over all frames of an utterance (as in the paper and
    # fairseq); the convolutions alone have the stated receptive fields and are causal.
    from w2v.models.wav2vec import MaskedGroupNorm

    monkeypatch.setattr(MaskedGroupNorm, "forward", lambda self, x, valid=None: x + 1.0)
    torch.manual_seed(0)
    model = wav2vec_tiny().eval()
    wav = torch.randn(1, 3200, requires_grad=True)
    z = model.feature_extractor(wav)
    z[0, :, 0].sum().backward()
    touched = (wav.grad[0] != 0).nonzero().flatten()
    # frame 0 sees samples [0, 465): 10 + 7*5 + 3*20 + 3*40 + 3*80 - 1
    assert touched.min().item() == 0 and touched.max().item() == 464
    # frame 5 of the (3-layer, kernel 3) context depends on z frames 5-6 .. 5 only
    z = torch.randn(1, 32, 20, requires_grad=True)
    c = model.feature_aggregator(z)
    c[0, :, 10].sum().backward()
    frames = (z.grad[0].abs().sum(0) != 0).nonzero().flatten().tolist()
    assert frames == list(range(4, 11))


def test_padded_batch_equals_single_and_short_inputs():
    torch.manual_seed(0)
    model = wav2vec_tiny().eval()
    lens = [8000, 5123, 3001]
    wavs = [torch.randn(n) for n in lens]
    batch = torch.zeros(3, 8000)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    layers, flens = model.extract_features(batch, torch.tensor(lens))
    assert len(layers) == 3  # one per context layer, like the transformer encoders' blocks
    z, zl = model.feature_extractor(batch, torch.tensor(lens))
    assert torch.allclose(model.feature_aggregator(z, zl).transpose(1, 2), layers[-1], atol=1e-5)
    for i, w in enumerate(wavs):
        single, _ = model.extract_features(w[None])
        n = single[-1].shape[1]
        assert int(flens[i]) == n
        for a, b in zip(layers, single):
            assert torch.allclose(a[i, :n], b[0], atol=1e-4), (i, (a[i, :n] - b[0]).abs().max())
    # zero-length and shorter-than-one-frame inputs give zero frames
    empty, lengths = model.extract_features(torch.zeros(2, 100), torch.tensor([0, 100]))
    assert all(t.shape[1] == 0 for t in empty) and lengths.tolist() == [0, 0]
    z = model.feature_extractor(torch.zeros(1, 0))
    assert z.shape == (1, 32, 0)


def test_config_roundtrip():
    from dataclasses import asdict

    cfg = wav2vec_tiny().config
    restored = Wav2VecConfig(**{k: (list(map(list, v)) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()})
    assert restored == cfg
    m1 = wav2vec_model(cfg)
    m2 = wav2vec_model(restored)
    m2.load_state_dict(m1.state_dict())
    with pytest.raises(ValueError, match="Expected 2D"):
        m1.feature_extractor(torch.zeros(16000))


class _FairseqStyleWav2Vec(torch.nn.Module):
    """Independent stand-in with fairseq's module layout and torch's own GroupNorm / padding."""

    def __init__(self, enc, agg, skip_feat, skip_agg, log_compression):
        super().__init__()
        from torch import nn

        self.skip_feat, self.skip_agg, self.log_compression = skip_feat, skip_agg, log_compression
        blocks, c_in = [], 1
        for dim, k, s in enc:
            blocks.append(nn.Sequential(nn.Conv1d(c_in, dim, k, stride=s, bias=False), nn.Dropout(0.0), nn.GroupNorm(1, dim), nn.ReLU()))
            c_in = dim
        self.feature_extractor = nn.Module()
        self.feature_extractor.conv_layers = nn.ModuleList(blocks)
        blocks, projs = [], []
        for dim, k, s in agg:
            blocks.append(nn.Sequential(nn.ReplicationPad1d((k - 1, 0)), nn.Conv1d(c_in, dim, k, stride=s), nn.Dropout(0.0), nn.GroupNorm(1, dim), nn.ReLU()))
            projs.append(nn.Conv1d(c_in, dim, 1, bias=False) if (skip_agg and c_in != dim) else None)
            c_in = dim
        self.feature_aggregator = nn.Module()
        self.feature_aggregator.conv_layers = nn.ModuleList(blocks)
        self.feature_aggregator.residual_proj = nn.ModuleList(projs)
        self.wav2vec_predictions = nn.Module()
        self.wav2vec_predictions.project_to_steps = nn.ConvTranspose2d(c_in, c_in, (1, 12))
        for p in self.parameters():  # non-trivial norm affines
            if p.dim() == 1:
                torch.nn.init.uniform_(p, 0.5, 1.5)

    def forward(self, wav):
        x = wav[:, None]
        for block in self.feature_extractor.conv_layers:
            r = x
            x = block(x)
            if self.skip_feat and x.shape[1] == r.shape[1]:
                r = r[..., :: r.shape[-1] // x.shape[-1]][..., : x.shape[-1]]
                x = (x + r) * math.sqrt(0.5)
        if self.log_compression:
            x = torch.log(x.abs() + 1)
        z = x
        for block, proj in zip(self.feature_aggregator.conv_layers, self.feature_aggregator.residual_proj):
            r = x
            x = block(x)
            if self.skip_agg:
                x = (x + (proj(r) if proj is not None else r)) * math.sqrt(0.5)
        return z, x


def test_fairseq_checkpoint_parity(tmp_path):
    import argparse

    from w2v.models import load_pretrained

    torch.manual_seed(0)
    enc = [(16, 10, 5), (16, 8, 4), (16, 4, 2), (16, 4, 2), (16, 4, 2), (16, 1, 1)]
    agg = [(24, 2, 1), (24, 3, 1), (24, 4, 1)]
    ref = _FairseqStyleWav2Vec(enc, agg, True, True, True).eval()
    args = argparse.Namespace(
        arch="wav2vec", conv_feature_layers=str(enc), conv_aggregator_layers=str(agg), skip_connections_feat=True,
        skip_connections_agg=True, residual_scale=0.5, log_compression=True, aggregator="cnn", vq_type="none",
        agg_zero_pad=False, no_conv_bias=False, prediction_steps=12, num_negatives=10,
    )
    state = {k: v for k, v in ref.state_dict().items()}
    torch.save({"args": args, "model": state}, tmp_path / "wav2vec_fake.pt")
    model, config = load_pretrained(tmp_path / "wav2vec_fake.pt")
    assert config.encoder_layers == tuple(enc) and config.context_skip_connections
    wav = torch.randn(2, 4000)
    with torch.no_grad():
        z_ref, c_ref = ref(wav)
        z = model.feature_extractor(wav)
        c = model.feature_aggregator(z)
    assert torch.allclose(z, z_ref, atol=1e-5)
    assert torch.allclose(c, c_ref, atol=1e-4), (c - c_ref).abs().max()
    # our own checkpoint layout round-trips as well
    from dataclasses import asdict

    torch.save({"model": model.state_dict(), "config": asdict(config), "kind": "wav2vec"}, tmp_path / "own.pt")
    again, _ = load_pretrained(tmp_path / "own.pt")
    assert torch.allclose(again.feature_aggregator(again.feature_extractor(wav)), c, atol=1e-6)
