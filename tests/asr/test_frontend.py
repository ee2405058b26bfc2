"""On-the-fly SSL front end: weighted-sum arithmetic, what trains when frozen or fine-tuned,
padding, and checkpoints that leave a frozen encoder out (restored, digest-checked)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch.nn import functional as F

from w2v.asr.frontend import ENCODER_PREFIX, checkpoint_state, load_model_state, make_spec
from w2v.asr.model import AsrConfig, build_model
from w2v.models import save_checkpoint, wav2vec2_tiny

HEAD = dict(num_tokens=7, d_model=32, num_heads=4, num_layers=1, ffn_dim=64, conv_kernel=5, dropout=0.0)


@pytest.fixture
def ssl_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(wav2vec2_tiny(), path)
    return path


def _model(ckpt, layer, finetune=False):
    spec, state = make_spec(str(ckpt), layer, finetune)
    cfg = AsrConfig(**HEAD, feature_dim=spec["feature_dim"], subsampling=2, ssl=spec)
    torch.manual_seed(1)
    model = build_model(cfg)
    model.frontend.encoder.load_state_dict(state)
    return model


def _audio(*seconds):
    torch.manual_seed(2)
    return [torch.randn(int(s * 16000)) * 0.1 for s in seconds]


def test_weighted_sum_is_softmax_over_normalised_layers(ssl_ckpt):
    model = _model(ssl_ckpt, 0).eval()
    fe = model.frontend
    with torch.no_grad():
        fe.layer_weights.copy_(torch.tensor([0.3, -1.2]))
    (wav,) = _audio(1.0)
    x, frames = fe(wav[None], torch.tensor([wav.numel()]))
    layers, _ = fe.encoder.extract_features(wav[None])
    w = torch.softmax(torch.tensor([0.3, -1.2]), 0)
    want = w[0] * F.layer_norm(layers[0], (64,)) + w[1] * F.layer_norm(layers[1], (64,))
    torch.testing.assert_close(x, want, atol=1e-5, rtol=1e-5)
    assert frames.tolist() == [49] and x.shape == (1, 49, 64)
    # a single layer is that layer as it is
    one = _model(ssl_ckpt, 2).eval().frontend
    torch.testing.assert_close(one(wav[None], torch.tensor([wav.numel()]))[0], layers[1])


@pytest.mark.parametrize("finetune", [False, True])
def test_what_trains(ssl_ckpt, finetune):
    model = _model(ssl_ckpt, 0, finetune).train()
    enc = model.frontend.encoder
    assert enc.training == finetune  # a frozen encoder stays in eval mode (no dropout)
    a, b = _audio(1.0, 0.7)
    batch = torch.zeros(2, a.numel())
    batch[0], batch[1, : b.numel()] = a, b
    lp, out_lens = model(batch, torch.tensor([a.numel(), b.numel()]))
    assert lp.shape[0] == 2 and out_lens.tolist() == [24, 16]  # 49, 34 frames at 20 ms → ×2
    lp.sum().backward()
    assert model.frontend.layer_weights.grad is not None and model.output.weight.grad is not None
    conv = [p.grad for p in enc.feature_extractor.parameters()]
    transformer = [p.grad for n, p in enc.named_parameters() if n.startswith("encoder.transformer")]
    assert all(g is None for g in conv)  # the conv feature encoder never trains
    assert all((g is not None) == finetune for g in transformer)


def test_padded_batch_equals_per_utterance(ssl_ckpt):
    model = _model(ssl_ckpt, 0).eval()
    a, b = _audio(1.2, 0.6)
    batch = torch.zeros(2, a.numel())
    batch[0], batch[1, : b.numel()] = a, b
    lp, n = model(batch, torch.tensor([a.numel(), b.numel()]))
    for i, wav in enumerate((a, b)):
        single, m = model(wav[None], torch.tensor([wav.numel()]))
        assert int(m) == int(n[i])
        torch.testing.assert_close(lp[i, : int(m)], single[0], atol=1e-4, rtol=1e-4)


def test_frozen_encoder_left_out_of_checkpoints_and_restored(ssl_ckpt, tmp_path):
    model = _model(ssl_ckpt, 0).eval()
    state = checkpoint_state(model)
    assert not any(k.startswith(ENCODER_PREFIX) for k in state) and "frontend.layer_weights" in state
    fresh = build_model(AsrConfig.from_dict(asdict(model.config)))  # random encoder weights
    load_model_state(fresh, state, "epoch-1.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, msg=k)
    # the SSL checkpoint changed since training: refused
    torch.manual_seed(5)
    save_checkpoint(wav2vec2_tiny(), ssl_ckpt)
    with pytest.raises(ValueError, match="epoch-1.pt was trained on the frozen encoder of .*digest"):
        load_model_state(build_model(model.config), state, "epoch-1.pt")
    # fine-tuned encoders are part of the checkpoint
    tuned = _model(ssl_ckpt, 1, finetune=True)
    assert any(k.startswith(ENCODER_PREFIX) for k in checkpoint_state(tuned))
    with pytest.raises(ValueError, match="missing"):
        load_model_state(build_model(tuned.config), checkpoint_state(model), "x.pt")


def test_bad_layer(ssl_ckpt):
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        make_spec(str(ssl_ckpt), 3, False)


def test_linear_head_on_the_encoder_keeps_its_frame_rate(ssl_ckpt):
    """fairseq's / HF's fine-tuning set-up: encoder frames → dropout → one linear map."""
    spec, state = make_spec(str(ssl_ckpt), 2, finetune=True)
    cfg = AsrConfig(num_tokens=7, feature_dim=spec["feature_dim"], subsampling=1, ssl=spec, head="linear")
    model = build_model(cfg)
    model.frontend.encoder.load_state_dict(state)
    outside = {n: p.numel() for n, p in model.named_parameters() if not n.startswith(ENCODER_PREFIX)}
    assert outside == {"output.weight": 7 * 64, "output.bias": 7}
    wav = _audio(1.0, 0.6)
    lens = torch.tensor([w.numel() for w in wav])
    batch = torch.zeros(2, int(lens.max()))
    for i, w in enumerate(wav):
        batch[i, : w.numel()] = w
    log_probs, out_lens = model.eval()(batch, lens)
    assert out_lens.tolist() == [49, 29] and log_probs.shape == (2, 49, 7)  # 20 ms frames
    with pytest.raises(ValueError, match="a linear head keeps the input's frame rate"):
        AsrConfig(head="linear", subsampling=2)


def test_a_finetuned_encoder_stays_frozen_for_its_first_updates(ssl_ckpt, librispeech_tiny_cuts, tmp_path):
    from w2v.asr.train import TrainConfig, train
    from w2v.lang.symbols import write_symbol_table

    cuts = librispeech_tiny_cuts["dev-clean"].subset(first=6)
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    lang = tmp_path / "lang"
    lang.mkdir()
    chars = sorted({ch for c in cuts for ch in c.supervisions[0].text if ch != " "})
    write_symbol_table(lang / "tokens.txt", ["<blk>", "<unk>", *chars, "#0"])
    encoder = torch.load(ssl_ckpt, weights_only=True)["model"]

    def encoder_after(epochs):
        cfg = TrainConfig(exp_dir=str(tmp_path / "exp"), lang_dir=str(lang), train_cuts=[str(path)],
                          token_type="char", num_epochs=epochs, max_duration=30, ssl_checkpoint=str(ssl_ckpt),
                          ssl_layer=2, ssl_finetune=True, ssl_freeze_updates=2, progress=False,
                          tensorboard=False, warmup_steps=2)
        result = train(cfg, AsrConfig(head="linear", subsampling=1))
        steps = torch.load(tmp_path / "exp" / f"epoch-{epochs}.pt", weights_only=True)["step"]
        return steps, {k[len(ENCODER_PREFIX):]: v for k, v in result.model.state_dict().items()
                       if k.startswith(ENCODER_PREFIX)}

    steps, state = encoder_after(1)
    assert 0 < steps <= 2 and all(torch.equal(state[k], encoder[k]) for k in encoder)
    steps, state = encoder_after(3)
    assert steps > 2 and any(not torch.equal(state[k], encoder[k]) for k in encoder if ".transformer." in k)
