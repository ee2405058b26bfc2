import pytest
import torch

from w2v.models.vq_wav2vec import VqWav2VecConfig, vq_wav2vec_base, vq_wav2vec_model, vq_wav2vec_tiny
from w2v.models.quantizers import GumbelVectorQuantizer, KmeansVectorQuantizer


@pytest.mark.parametrize("kind", ["gumbel", "kmeans"])
def test_vq_wav2vec_shapes_and_codes(kind):
    torch.manual_seed(0)
    model = vq_wav2vec_tiny(kind).eval()
    wav = torch.randn(2, 8000)
    z, zq, c, qout, _ = model(wav)
    assert z.shape == zq.shape == c.shape == (2, 32, 48)
    assert qout.codes.shape == (2, 48, 2)
    assert qout.codes.max() < 16
    # every quantized frame is a codeword pair
    _, codes, _ = model.quantize(z)
    assert torch.equal(codes, qout.codes)
    book = model.vector_quantizer.codevectors.view(2, 16, 16) if kind == "gumbel" else model.vector_quantizer.codebook
    rebuilt = torch.cat([book[0][codes[..., 0]], book[1][codes[..., 1]]], dim=-1)
    assert torch.allclose(rebuilt, zq.transpose(1, 2), atol=1e-6)


def test_base_factory_and_schedule():
    model = vq_wav2vec_base("gumbel")
    assert isinstance(model.vector_quantizer, GumbelVectorQuantizer)
    assert model.vector_quantizer.num_groups == 2 and model.vector_quantizer.num_vars == 320
    model.set_num_updates(140_000)
    assert model.vector_quantizer.temperature == pytest.approx(1.25)
    model.set_num_updates(10**6)
    assert model.vector_quantizer.temperature == pytest.approx(0.5)
    k = vq_wav2vec_base("kmeans")
    assert isinstance(k.vector_quantizer, KmeansVectorQuantizer) and k.vector_quantizer.gamma == 0.25
    with pytest.raises(ValueError):
        VqWav2VecConfig(quantizer="pq")


def test_padded_batch_equals_single():
    torch.manual_seed(0)
    model = vq_wav2vec_tiny("kmeans").eval()
    a, b = torch.randn(6000), torch.randn(4000)
    batch = torch.zeros(2, 6000)
    batch[0], batch[1, :4000] = a, b
    layers, lens = model.extract_features(batch, torch.tensor([6000, 4000]))
    single, _ = model.extract_features(b[None])
    n = int(lens[1])
    assert n == single[-1].shape[1]
    assert torch.allclose(layers[-1][1, :n], single[-1][0], atol=1e-4)


def test_config_dict_roundtrip():
    from dataclasses import asdict

    cfg = vq_wav2vec_tiny("gumbel").config
    again = VqWav2VecConfig(**asdict(cfg))
    assert again == cfg
    vq_wav2vec_model(again).load_state_dict(vq_wav2vec_model(cfg).state_dict())


@pytest.mark.parametrize("kind", ["gumbel", "kmeans"])
def test_zero_length_and_too_short_inputs(kind):
    model = vq_wav2vec_tiny(kind).eval()
    layers, lens = model.extract_features(torch.zeros(2, 100), torch.tensor([0, 100]))
    assert lens.tolist() == [0, 0] and all(t.shape == (2, 0, 32) for t in layers)
    layers, _ = model.extract_features(torch.zeros(1, 0))
    assert all(t.shape == (1, 0, 32) for t in layers)
