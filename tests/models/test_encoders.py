"""wav2vec 2.0 / HuBERT / data2vec / WavLM encoders: shapes, padding, bad input, bf16, pre-training API."""

from __future__ import annotations

import pytest
import torch
import torchaudio

import w2v.models as M
from w2v.models.components import FeatureEncoder

TINY = ["wav2vec2_tiny", "data2vec_tiny", "hubert_tiny", "wavlm_tiny"]


def _tiny(name: str, **kw) -> M.SSLEncoder:
    torch.manual_seed(0)
    return M.FACTORIES[name](**kw).eval()


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "ours, theirs",
    [("wav2vec2_base", "wav2vec2_base"), ("wav2vec2_large", "wav2vec2_large"), ("hubert_large", "hubert_large"),
     ("wavlm_base", "wavlm_base")],
)
def test_parameter_counts_match_torchaudio(ours, theirs):
    # Meta device: shapes only, no 300M-parameter allocations.
    with torch.device("meta"):
        model = M.FACTORIES[ours]()
        reference = getattr(torchaudio.models, theirs)()
    encoder_only = _count(model) - model.config.embed_dim  # minus the mask embedding torchaudio lacks
    assert encoder_only == _count(reference)
    if ours == "wav2vec2_base":
        assert round(encoder_only / 1e6, 2) == 94.37
        assert model.config.num_heads == 12
    if ours == "wav2vec2_large":
        assert round(encoder_only / 1e6, 2) == 315.43


def test_data2vec_base_matches_published_count():
    with torch.device("meta"):
        model = M.data2vec_base()
    assert round((_count(model) - 768) / 1e6, 2) == 93.16  # HF Data2VecAudioModel default


def test_same_weights_as_torchaudio_give_same_layers():
    """Our components keep torchaudio's parameter names: its state dict loads and outputs agree."""
    config = M.wav2vec2_tiny().config
    ref = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=list(config.conv_layers), extractor_conv_bias=False,
        encoder_embed_dim=64, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
        encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.0, encoder_ff_interm_features=128,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
        aux_num_out=None,
    ).eval()
    ours = _tiny("wav2vec2_tiny")
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert missing == ["mask_embedding"] and unexpected == []
    x = torch.randn(1, 6000)
    with torch.inference_mode():
        a, _ = ours.extract_features(x)
        b, _ = ref.extract_features(x)
        assert len(a) == len(b) == 2
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_padded_batch_equals_per_utterance(name):
    model = _tiny(name, normalize_waveform=True)
    torch.manual_seed(1)
    lens = [7001, 4803, 400]
    waves = [torch.randn(n) for n in lens]
    batch = torch.zeros(3, max(lens))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    batch[1, lens[1]:] = 5.0  # garbage in the padding must not matter
    with torch.inference_mode():
        layers, out_lens = model.extract_features(batch, torch.tensor(lens))
        assert out_lens.tolist() == [model.config.num_frames(n) for n in lens] == [21, 14, 1]
        for i, w in enumerate(waves):
            single, single_len = model.extract_features(w[None])
            assert single_len is None
            n = int(out_lens[i])
            assert single[-1].shape[1] == n
            for a, b in zip(layers, single):
                torch.testing.assert_close(a[i, :n], b[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_no_grad_equals_autograd(name):
    """Without autograd the kernels may differ (fused oneDNN GELU, cached bf16 weights); the values may not."""
    model = _tiny(name)
    x = torch.randn(2, 6000) * 0.1 + 0.5  # a DC offset 5x the signal: the group norm must not cancel it
    lengths = torch.tensor([6000, 4500])
    with torch.no_grad():
        fast, _ = model.extract_features(x, lengths)
    slow, out_lens = model.extract_features(x, lengths)
    assert slow[-1].requires_grad and not fast[-1].requires_grad
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a[0], b[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a[1, : out_lens[1]], b[1, : out_lens[1]], atol=2e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            fast_bf16, _ = model.extract_features(x)
        slow_bf16, _ = model.extract_features(x)
    for a, b in zip(fast_bf16, slow_bf16):
        assert (a.float() - b.float()).abs().max() < 0.1


def test_feature_encoder_equals_conv1d_group_norm():
    """The convolutions as products over windows give torch's Conv1d + GroupNorm + GELU, values and
    gradients, and the masked group norm of a padded utterance equals the unpadded one."""
    torch.manual_seed(0)
    encoder = _tiny("wav2vec2_tiny", feature_grad_mult=1.0).feature_extractor
    x = torch.randn(2, 6000) * 0.1 + 0.5
    got, _ = encoder(x)
    got.pow(2).mean().backward()
    grads = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()

    h = x.unsqueeze(1)
    for block in encoder.conv_layers:
        h = block.conv(h)
        if block.layer_norm is not None:
            h = block.layer_norm(h)
        h = torch.nn.functional.gelu(h)
    want = h.transpose(1, 2)
    want.pow(2).mean().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads, [p.grad for p in encoder.parameters()]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-3)

    padded = torch.cat([x[1:], torch.full((1, 6000), 7.0)], dim=1)  # garbage after 6000 samples
    with torch.no_grad():
        got_padded, lens = encoder(padded, torch.tensor([6000]))
        single, _ = encoder(x[1:])
    torch.testing.assert_close(got_padded[:, : int(lens[0])], single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_odd_lengths_frames_and_shapes(name):
    model = _tiny(name)
    with torch.inference_mode():
        for samples, frames in [(400, 1), (719, 1), (720, 2), (16001, 49), (16000, 49)]:
            layers, lens = model.extract_features(torch.randn(2, samples))
            assert lens is None
            assert [tuple(y.shape) for y in layers] == [(2, frames, 64)] * 2
            final, _ = model(torch.randn(2, samples))
            assert final.shape == (2, frames, 64)
    assert model.config.receptive_field == 400 and model.config.hop_samples == 320
    big = torch.randn(2, 5005)
    with torch.inference_mode():  # a view with a storage offset (the GEMM convs index raw storage)
        for a, b in zip(model.extract_features(big[:, 5:])[0], model.extract_features(big[:, 5:].clone())[0]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize(
    "audio, lengths, message",
    [
        (torch.randn(8000), None, r"Expected 2D \(batch, time\) audio. Found: \[8000\]"),
        (torch.randn(1, 1, 8000), None, r"Expected 2D \(batch, time\) audio. Found: \[1, 1, 8000\]"),
        (torch.zeros(2, 8000, dtype=torch.int16), None, "Expected floating-point audio"),
        (torch.randn(2, 399), None, "399 samples is shorter than the receptive field"),
        (torch.randn(2, 0), None, "0 samples is shorter than the receptive field"),
        (torch.randn(2, 8000), torch.tensor([8000, 0]), r"0 samples is shorter.*expected every length >= 400"),
        (torch.randn(2, 8000), torch.tensor([8000]), r"Expected lengths of shape \[2\]. Found: \[1\]"),
        (torch.randn(2, 8000), torch.tensor([8001, 8000]), "max length 8001 > 8000"),
        (torch.randn(2, 8000), torch.tensor([8000.0, 800.0]), "integer lengths"),
    ],
)
def test_bad_input_is_named(audio, lengths, message):
    model = _tiny("wav2vec2_tiny")
    with pytest.raises(ValueError, match=message):
        model.extract_features(audio, lengths)


def test_encode_rejects_bad_mask_and_features():
    model = _tiny("hubert_tiny")
    feats, lens = model.feature_extractor(torch.randn(2, 4000))
    with pytest.raises(ValueError, match=r"bool mask of shape \[2, 12\]"):
        model.encode(feats, mask=torch.zeros(2, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"conv features \[batch, frames, 64\]"):
        model.encode(feats.transpose(1, 2))
    with pytest.raises(ValueError, match=r"num_layers must be in \[1, 2\]"):
        model.encode(feats, num_layers=3)


@pytest.mark.parametrize("name", TINY)
def test_bf16_autocast_close_to_fp32(name):
    model = _tiny(name)
    x = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 12000])
    with torch.inference_mode():
        ref, _ = model.extract_features(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = model.extract_features(x, lengths)
    for a, b in zip(ref, low):
        valid = a[1, :37]
        err = (b[1, :37].float() - valid).abs()
        # post-LN outputs are unit-scale: bf16 (8-bit mantissa) keeps them within a few 1e-2
        assert err.max() < 0.15 and err.mean() < 0.02, (err.max(), err.mean())
        assert torch.isfinite(b).all()


def test_bf16_weight_cache_follows_weight_updates():
    """Inference under autocast keeps bf16 weight copies; an in-place update must refresh them."""
    model = _tiny("wav2vec2_tiny")
    x = torch.randn(1, 4000)
    weight = model.encoder.transformer.layers[0].feed_forward.output_dense.weight

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)[0].float()

    a = run()
    with torch.no_grad():
        weight.mul_(3.0)
    b = run()
    with torch.no_grad():
        weight.div_(3.0)
    c = run()
    assert (a - b).abs().max() > 0.05
    torch.testing.assert_close(a, c, atol=0.03, rtol=0)


def test_mask_embedding_replaces_masked_frames_only():
    model = _tiny("wav2vec2_tiny", dropout_input=0.0)
    feats, _ = model.feature_extractor(torch.randn(1, 8000))
    mask = torch.zeros(1, feats.shape[1], dtype=torch.bool)
    mask[0, 5:10] = True
    with torch.no_grad():
        plain = model.encode(feats)
        masked = model.encode(feats, mask=mask)
        torch.testing.assert_close(masked.projected, plain.projected)  # before masking
        assert not torch.allclose(masked.output, plain.output)
        # masking with the frames' own projection is a no-op: the embedding really is what is inserted
        model.mask_embedding.copy_(plain.projected[0, 5])
        same = mask.clone()
        same[0, 6:10] = False
        torch.testing.assert_close(model.encode(feats, mask=same).output, plain.output)
    model.train()
    out = model.encode(feats, mask=mask)
    (out.output * torch.randn_like(out.output)).sum().backward()  # a plain sum of a layer norm has no gradient
    assert model.mask_embedding.grad is not None and model.mask_embedding.grad.abs().sum() > 0


def test_encoder_output_fields_and_ffn_results():
    model = _tiny("data2vec_tiny")
    x = torch.randn(2, 6000)
    with torch.no_grad():
        feats, _ = model.feature_extractor(x, torch.tensor([6000, 5000]))
        out = model.encode(feats, torch.tensor([18, 15]), return_ffn=True)
    assert out.features.shape == (2, 18, 64) and out.projected.shape == (2, 18, 64)
    assert len(out.layer_results) == len(out.ffn_results) == 2
    assert out.padding_mask.tolist()[1] == [False] * 15 + [True] * 3
    # post-LN block: output = final_layer_norm(layer_norm(attn + x) + ffn); check ffn is that summand
    layer = model.encoder.transformer.layers[1]
    x_in = out.layer_results[0]
    with torch.no_grad():
        attn_key = torch.zeros(2, 18).masked_fill(out.padding_mask, float("-inf"))
        a, _ = layer.attention(x_in, attention_mask=(attn_key == 0)[:, None, None, :].expand(2, 1, 18, 18))
        h = layer.layer_norm(x_in + a)
        torch.testing.assert_close(out.ffn_results[1], layer.feed_forward(h), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.layer_results[1], layer.final_layer_norm(h + out.ffn_results[1]))
    assert out.output is out.layer_results[-1]  # post-LN: no final layer norm after the last block
    pre = _tiny("wav2vec2_tiny", layer_norm_first=True)
    with torch.no_grad():
        o = pre.encode(pre.feature_extractor(x)[0])
        torch.testing.assert_close(o.output, pre.encoder.transformer.layer_norm(o.layer_results[-1]))
        assert len(pre.encode(pre.feature_extractor(x)[0], num_layers=1).layer_results) == 1


def test_feature_grad_mult_scales_conv_gradients():
    torch.manual_seed(0)
    x = torch.randn(1, 4000)
    grads = {}
    for mult in (1.0, 0.1, 0.0):
        model = _tiny("wav2vec2_tiny", feature_grad_mult=mult)
        model.train()
        feats, _ = model.feature_extractor(x)
        if mult == 0.0:
            assert not feats.requires_grad
            continue
        feats.pow(2).sum().backward()
        grads[mult] = model.feature_extractor.conv_layers[0].conv.weight.grad.clone()
    torch.testing.assert_close(grads[0.1], grads[1.0] * 0.1)


def test_layerdrop_skips_blocks_in_training_only():
    model = _tiny("wav2vec2_tiny", layerdrop=1.0)
    feats, _ = model.feature_extractor(torch.randn(1, 4000))
    model.train()
    assert len(model.encode(feats).layer_results) == 0
    model.eval()
    assert len(model.encode(feats).layer_results) == 2
    wavlm = _tiny("wavlm_tiny", layerdrop=1.0).train()  # the block that makes the position bias stays
    assert len(wavlm.encode(wavlm.feature_extractor(torch.randn(1, 4000))[0]).layer_results) == 1


def test_waveform_normalisation_per_utterance():
    x = torch.randn(2, 1000) * 3 + 2
    y = FeatureEncoder.normalize(x, torch.tensor([1000, 600]))
    assert y[1, 600:].abs().max() == 0
    torch.testing.assert_close(y[1, :600].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1, :600].std(unbiased=False), torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(y[1, :600], FeatureEncoder.normalize(x[1:, :600], None)[0], atol=1e-5, rtol=0)
    model = _tiny("wav2vec2_tiny", normalize_waveform=True)
    with torch.no_grad():  # scale and offset of the input no longer matter
        torch.testing.assert_close(model(x)[0], model(x * 7 - 1)[0], atol=1e-4, rtol=1e-4)


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match=r"Unknown Wav2Vec2Config fields \['embed_dimm'\]"):
        M.wav2vec2_tiny(embed_dimm=3)


def test_config_dict_with_the_old_frame_shift_in_samples_still_loads():
    """The hop used to be ``frame_shift`` (samples); ``frame_shift`` now means seconds everywhere."""
    values = M.config_to_dict(M.wav2vec2_tiny().config)
    assert "frame_shift" not in values and "hop_samples" not in values  # derived, never stored
    config = M.config_from_dict("wav2vec2", {**values, "frame_shift": 320})
    assert config == M.config_from_dict("wav2vec2", values) and config.hop_samples == 320
    with pytest.raises(ValueError, match="frame_shift 160 .samples. disagrees with the 320-sample hop"):
        M.config_from_dict("wav2vec2", {**values, "frame_shift": 160})
