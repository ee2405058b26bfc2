"""load_pretrained: HF dirs written by transformers, hand-built fairseq checkpoints, our own checkpoints.

Parity is against transformers' own implementation of each family (random init, no downloads);
the fairseq checkpoints carry the HF weights under fairseq's key names, mapped by hand below.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import types

import pytest
import torch

import w2v.models as M
from w2v.models.loading import parse_conv_layers, read_safetensors

transformers = pytest.importorskip("transformers")

CONV = dict(conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
SMALL = dict(
    CONV, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
    num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    feat_proj_dropout=0.0, layerdrop=0.0,
)


def _hf(kind: str, **kw):
    torch.manual_seed(0)
    if kind == "wav2vec2":
        cfg = transformers.Wav2Vec2Config(**SMALL, num_conv_pos_embeddings=16, **kw)
        return transformers.Wav2Vec2Model(cfg)
    if kind == "hubert":
        cfg = transformers.HubertConfig(**SMALL, num_conv_pos_embeddings=16, **kw)
        return transformers.HubertModel(cfg)
    if kind == "wavlm":
        cfg = transformers.WavLMConfig(
            **SMALL, num_conv_pos_embeddings=16, num_buckets=16, max_bucket_distance=40, **kw
        )
        return transformers.WavLMModel(cfg)
    cfg = transformers.Data2VecAudioConfig(**SMALL, num_conv_pos_embeddings=3, conv_pos_kernel_size=5, **kw)
    return transformers.Data2VecAudioModel(cfg)


def _perturb(model: torch.nn.Module) -> None:
    """Random layer-norm / bias values, so a swapped or dropped norm cannot go unnoticed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "gru_rel_pos_const" in name:
                p.add_(torch.randn_like(p) * 0.1)


def _hf_layers(model, x):
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    return list(out.hidden_states[1:]), out.last_hidden_state


def _assert_layers(ours, x, ref_layers, ref_last, pre_ln):
    with torch.no_grad():
        layers, _ = ours.extract_features(x)
        final, _ = ours(x)
    assert len(layers) == len(ref_layers)
    # transformers reports the last hidden state of a pre-LN model after the final layer norm
    check = layers[:-1] if pre_ln else layers
    for a, b in zip(check, ref_layers):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(final, ref_last, atol=1e-4, rtol=1e-4)


CASES = [
    ("wav2vec2", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    ("wav2vec2", dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
    ("hubert", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    ("wavlm", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    ("wavlm", dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    ("data2vec", dict()),
]


@pytest.mark.parametrize("kind, kw", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_huggingface_dir_parity(tmp_path, kind, kw):
    hf = _hf(kind, **kw).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    model, config = M.load_pretrained(tmp_path)
    assert config.kind == {"data2vec": "data2vec_audio"}.get(kind, kind)
    assert config.layer_norm_first == kw.get("do_stable_layer_norm", False)
    x = torch.randn(2, 5000)
    ref_layers, ref_last = _hf_layers(hf, x)
    _assert_layers(model, x, ref_layers, ref_last, config.layer_norm_first)
    torch.testing.assert_close(model.mask_embedding, hf.masked_spec_embed)


def test_huggingface_pretraining_model_with_heads_and_normalize(tmp_path):
    """Chinese wav2vec2 releases are Wav2Vec2ForPreTraining dirs: prefix 'wav2vec2.', quantizer heads."""
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(**SMALL, num_conv_pos_embeddings=16, codevector_dim=16, proj_codevector_dim=16,
                                      num_codevectors_per_group=8)
    hf = transformers.Wav2Vec2ForPreTraining(cfg).eval()
    hf.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"do_normalize": true, "sampling_rate": 16000}')
    assert any(k.startswith("quantizer.") for k in read_safetensors(tmp_path / "model.safetensors"))
    model, config = M.load_pretrained(tmp_path)
    assert config.normalize_waveform
    x = torch.randn(1, 4000) * 5 + 1
    xn = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
    ref_layers, ref_last = _hf_layers(hf.wav2vec2, xn)
    _assert_layers(model, x, ref_layers, ref_last, False)


def test_huggingface_pytorch_model_bin(tmp_path):
    hf = _hf("hubert").eval()
    hf.config.save_pretrained(tmp_path)  # transformers 5 writes safetensors only: write the .bin ourselves
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / "pytorch_model.bin").is_file()
    model, _ = M.load_pretrained(tmp_path)
    x = torch.randn(1, 3000)
    ref_layers, ref_last = _hf_layers(hf, x)
    _assert_layers(model, x, ref_layers, ref_last, False)


class _Call:
    """Pickles as ``fn(*args)``: a payload in a weights file."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_huggingface_dir_reads_safetensors_not_pytorch_model_bin(tmp_path):
    """With both files present the .bin is never opened: a malicious one changes nothing."""
    import os

    from w2v.serialization import CheckpointError

    hf = _hf("wav2vec2").eval()
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    marker = tmp_path / "ran"
    torch.save({"masked_spec_embed": _Call(os.system, f"touch {marker}")}, tmp_path / "pytorch_model.bin")
    model, _ = M.load_pretrained(tmp_path)
    x = torch.randn(1, 3000)
    _assert_layers(model, x, *_hf_layers(hf, x), False)
    assert not marker.exists()
    # without the safetensors file the .bin is read, and refused
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: refuses to load: .*os\.system"):
        M.load_pretrained(tmp_path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# fairseq (key names as fairseq's Wav2Vec2Model / HubertModel / Data2VecAudioModel write them)


def _to_fairseq(hf_state: dict[str, torch.Tensor], layer_norm_convs: bool, data2vec: bool = False) -> dict:
    out = {}
    for k, v in hf_state.items():
        parts = k.split(".")
        if k.startswith("feature_extractor.conv_layers."):
            i, sub, leaf = parts[2], parts[3], parts[4]
            if sub == "conv":
                out[f"feature_extractor.conv_layers.{i}.0.{leaf}"] = v
            elif layer_norm_convs:  # Sequential(conv, dropout, Sequential(Transpose, LayerNorm, Transpose), GELU)
                out[f"feature_extractor.conv_layers.{i}.2.1.{leaf}"] = v
            else:  # Sequential(conv, dropout, GroupNorm, GELU)
                out[f"feature_extractor.conv_layers.{i}.2.{leaf}"] = v
        elif k.startswith("feature_projection.layer_norm."):
            out["layer_norm." + parts[-1]] = v
        elif k.startswith("feature_projection.projection."):
            out["post_extract_proj." + parts[-1]] = v
        elif k == "masked_spec_embed":
            out["mask_emb"] = v
        elif k.startswith("encoder.pos_conv_embed.layers."):
            out[f"encoder.pos_conv.{parts[3]}.0.{parts[-1]}"] = v
        elif k.startswith("encoder.pos_conv_embed.conv."):
            leaf = {"original0": "weight_g", "original1": "weight_v"}.get(parts[-1], parts[-1])
            out[f"encoder.pos_conv.0.{leaf}"] = v
        elif k.startswith("encoder.layer_norm."):
            out[k] = v
        elif k.startswith("encoder.layers."):
            i, rest = parts[2], ".".join(parts[3:])
            rest = (rest.replace("attention.", "self_attn.").replace("feed_forward.intermediate_dense", "fc1")
                    .replace("feed_forward.output_dense", "fc2"))
            if rest.startswith("layer_norm."):
                rest = "self_attn_layer_norm." + parts[-1]
            out[f"encoder.layers.{i}.{rest}"] = v
        else:
            raise AssertionError(f"unmapped HF key {k}")
    return out


def _fairseq_model_cfg(name: str, **kw) -> dict:
    return dict(
        _name=name, extractor_mode="default", conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] * 2",
        conv_bias=False, encoder_embed_dim=32, encoder_layers=3, encoder_attention_heads=4, encoder_ffn_embed_dim=48,
        layer_norm_first=False, conv_pos=16, conv_pos_groups=4, activation_fn="gelu", dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0, encoder_layerdrop=0.05,
        feature_grad_mult=0.1, **kw,
    )


def test_fairseq_wav2vec2_hydra_checkpoint(tmp_path):
    hf = _hf("wav2vec2").eval()
    _perturb(hf)
    state = _to_fairseq(hf.state_dict(), layer_norm_convs=False)
    assert "encoder.pos_conv.0.weight_g" in state and "feature_extractor.conv_layers.0.2.weight" in state
    state["quantizer.vars"] = torch.randn(1, 16, 8)  # pre-training heads are dropped
    state["project_q.weight"] = torch.randn(8, 8)
    state["final_proj.weight"] = torch.randn(8, 32)
    path = tmp_path / "wav2vec_small.pt"
    torch.save({"cfg": {"model": _fairseq_model_cfg("wav2vec2"), "task": {"normalize": False}}, "model": state}, path)
    model, config = M.load_pretrained(path)
    assert isinstance(config, M.Wav2Vec2Config)
    assert config.conv_layers == ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2
    assert (config.feature_grad_mult, config.layerdrop) == (0.1, 0.05)
    x = torch.randn(2, 4000)
    _assert_layers(model, x, *_hf_layers(hf, x), False)


def test_fairseq_finetuned_hubert_argparse_checkpoint(tmp_path):
    """argparse-era fine-tuned checkpoint: ``args`` Namespace, encoder under ``w2v_encoder.w2v_model.``."""
    hf = _hf("hubert", feat_extract_norm="layer", do_stable_layer_norm=True).eval()
    _perturb(hf)
    state = _to_fairseq(hf.state_dict(), layer_norm_convs=True)
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()}
    state["w2v_encoder.w2v_model.label_embs_concat"] = torch.randn(10, 8)
    state["w2v_encoder.proj.weight"] = torch.randn(30, 32)
    inner = argparse.Namespace(**{k: v for k, v in _fairseq_model_cfg("hubert").items() if k != "_name"})
    inner.arch, inner.extractor_mode, inner.layer_norm_first, inner.normalize = "hubert", "layer_norm", True, True
    args = argparse.Namespace(arch="hubert_ctc", w2v_args=inner)
    path = tmp_path / "hubert_ft.pt"
    torch.save({"args": args, "model": state}, path)
    model, config = M.load_pretrained(path)
    assert isinstance(config, M.HubertConfig)
    assert config.conv_norm == "layer_norm" and config.layer_norm_first and config.normalize_waveform
    x = torch.randn(1, 4000)
    xn = torch.nn.functional.layer_norm(x, x.shape)
    _assert_layers(model, x, *_hf_layers(hf, xn), True)


def _fake_hydra_modules(monkeypatch, marker):
    """Classes named and shaped as omegaconf 2.0 and fairseq pickle them (neither is installed).

    They stay importable while the checkpoint loads: a loader that used them instead of inert
    stand-ins would run their ``__setstate__`` / ``__init__``, which create ``marker``.
    """
    import enum

    def touch(*args, **kwargs):
        open(marker, "w").close()

    names = ("omegaconf", "omegaconf.base", "omegaconf.nodes", "omegaconf.dictconfig", "omegaconf.listconfig",
             "fairseq", "fairseq.dataclass", "fairseq.dataclass.constants", "fairseq.models", "fairseq.models.data2vec",
             "fairseq.models.data2vec.data2vec_audio")
    modules = {n: types.ModuleType(n) for n in names}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    classes = {}
    for module, name in [("omegaconf.base", "Metadata"), ("omegaconf.base", "ContainerMetadata"),
                         ("omegaconf.nodes", "AnyNode"), ("omegaconf.nodes", "StringNode"),
                         ("omegaconf.nodes", "IntegerNode"), ("omegaconf.nodes", "FloatNode"),
                         ("omegaconf.nodes", "BooleanNode"), ("omegaconf.nodes", "EnumNode"),
                         ("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
                         ("fairseq.models.data2vec.data2vec_audio", "Data2VecAudioConfig")]:
        cls = type(name, (), {"__module__": module, "__qualname__": name, "__setstate__": touch})
        setattr(modules[module], name, cls)
        classes[name] = cls
    # fairseq's ChoiceEnum: members pickle as Choices(value)
    choices = enum.Enum("Choices", {"default": "default", "layer_norm": "layer_norm"},
                        module="fairseq.dataclass.constants")
    choices.__init__ = touch
    modules["fairseq.dataclass.constants"].Choices = choices
    classes["Choices"] = choices
    return classes


def _omegaconf(value, classes, key=None, parent=None):
    """A plain config as omegaconf 2.0 holds it: containers of typed value nodes with metadata."""
    import collections
    import typing

    def make(name, **state):
        obj = classes[name].__new__(classes[name])
        obj.__dict__.update(state)
        return obj

    def metadata(name, ref_type, object_type, **more):
        return make(name, ref_type=ref_type, object_type=object_type, optional=True, key=key, flags={},
                    resolver_cache=collections.defaultdict(dict), **more)

    if isinstance(value, dict):
        node = make("DictConfig", _metadata=metadata(
            "ContainerMetadata", typing.Any, classes["Data2VecAudioConfig"] if key == "model" else dict,
            key_type=typing.Any, element_type=typing.Any), _parent=parent)
        node._content = {k: _omegaconf(v, classes, k, node) for k, v in value.items()}
        return node
    if isinstance(value, (list, tuple)):
        node = make("ListConfig", _metadata=metadata("ContainerMetadata", typing.List[float], list,
                                                      key_type=int, element_type=float), _parent=parent)
        node._content = [_omegaconf(v, classes, i, node) for i, v in enumerate(value)]
        return node
    if key == "extractor_mode":
        return make("EnumNode", _val=classes["Choices"](value), enum_type=classes["Choices"], _parent=parent,
                    _metadata=metadata("Metadata", classes["Choices"], classes["Choices"]))
    kind = {bool: "BooleanNode", int: "IntegerNode", float: "FloatNode", str: "StringNode"}.get(type(value), "AnyNode")
    ref = {bool: bool, int: int, float: float, str: str}.get(type(value), typing.Any)
    return make(kind, _val=value, _parent=parent, _metadata=metadata("Metadata", ref, None))


def test_fairseq_data2vec_checkpoint_with_omegaconf_pickles(tmp_path, monkeypatch):
    """Hydra-era configs pickled as omegaconf / fairseq classes (neither installed) load as inert data."""
    import numpy as np

    hf = _hf("data2vec").eval()
    _perturb(hf)
    state = _to_fairseq(hf.state_dict(), layer_norm_convs=True, data2vec=True)
    assert "encoder.pos_conv.2.0.weight" in state

    marker = tmp_path / "ran"
    classes = _fake_hydra_modules(monkeypatch, marker)
    model_cfg = _fairseq_model_cfg("data2vec_audio", conv_pos_depth=3, conv_pos_width=15,
                                   latent_temp=(2.0, 0.5, 0.999995), final_dim=None)
    model_cfg["extractor_mode"] = "layer_norm"
    cfg = _omegaconf({"model": model_cfg, "task": {"_name": "audio_pretraining", "normalize": True}}, classes)
    path = tmp_path / "data2vec.pt"
    extra = {"best": np.float64(1.5), "train_iterator": {"epoch": 3}}
    torch.save({"cfg": cfg, "model": state, "extra_state": extra}, path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    model, config = M.load_pretrained(path)
    assert not marker.exists()
    assert isinstance(config, M.Data2VecAudioConfig)
    assert config.conv_norm == "layer_norm"  # from the ChoiceEnum member's value
    assert (config.pos_conv_depth, config.pos_conv_kernel, config.normalize_waveform) == (3, 5, True)
    x = torch.randn(2, 4000)
    xn = torch.nn.functional.layer_norm(x, x.shape[-1:])
    _assert_layers(model, x, *_hf_layers(hf, xn), False)


def test_parse_conv_layers_without_eval():
    spec = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
    assert parse_conv_layers(spec) == M.Wav2Vec2Config().conv_layers
    with pytest.raises(ValueError, match="Unsupported conv_feature_layers syntax"):
        parse_conv_layers("[(512, 10, 5)] + __import__('os').getcwd()")


# ----------------------------------------------------------------------------------------------
# own checkpoints and errors


@pytest.mark.parametrize("name", ["wav2vec2_tiny", "data2vec_tiny", "hubert_tiny", "wavlm_tiny"])
def test_own_checkpoint_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = M.FACTORIES[name](layerdrop=0.0).eval()
    path = tmp_path / "ckpt.pt"
    M.save_checkpoint(model, path, epoch=3)
    saved = torch.load(path, weights_only=True)
    assert saved["kind"] == model.config.kind and saved["epoch"] == 3
    loaded, config = M.load_pretrained(path)
    assert config == model.config
    x = torch.randn(1, 3000)
    with torch.no_grad():
        for a, b in zip(model.extract_features(x)[0], loaded.extract_features(x)[0]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_own_checkpoint_errors_name_what_was_expected(tmp_path):
    model = M.wav2vec2_tiny()
    good = {"model": model.state_dict(), "config": M.config_to_dict(model.config), "kind": "wav2vec2"}
    path = tmp_path / "bad.pt"

    torch.save({**good, "kind": "wav2vec3"}, path)
    with pytest.raises(ValueError, match=r"Unknown checkpoint kind 'wav2vec3'; expected one of \[.*'wav2vec2'"):
        M.load_pretrained(path)

    state = dict(good["model"])
    del state["encoder.transformer.layer_norm.weight"]
    state["head.weight"] = torch.zeros(3)
    torch.save({**good, "model": state}, path)
    with pytest.raises(ValueError, match=r"missing 1 keys \['encoder.transformer.layer_norm.weight'\]; "
                                         r"unexpected 1 keys \['head.weight'\]"):
        M.load_pretrained(path)

    state = dict(good["model"])
    state["mask_embedding"] = torch.zeros(65)
    torch.save({**good, "model": state}, path)
    with pytest.raises(ValueError, match=r"mask_embedding has shape \[65\]; expected \[64\]"):
        M.load_pretrained(path)

    torch.save({**good, "config": {**good["config"], "embed_dimm": 3}}, path)
    with pytest.raises(ValueError, match=r"Unknown Wav2Vec2Config fields \['embed_dimm'\]"):
        M.load_pretrained(path)

    torch.save({"weights": 1}, path)
    with pytest.raises(ValueError, match="not a known checkpoint"):
        M.load_pretrained(path)

    torch.save({"cfg": {"model": {"_name": "conformer_xyz"}, "task": {}}, "model": {}}, path)
    with pytest.raises(ValueError, match=r"Unknown fairseq model 'conformer_xyz'; expected one of"):
        M.load_pretrained(path)

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ValueError, match=r"Unsupported Hugging Face model_type 'whisper'; expected one of"):
        M.load_pretrained(tmp_path / "hf")
    with pytest.raises(FileNotFoundError):
        M.load_pretrained(tmp_path / "nothing_here")


def test_registered_builder_is_used(tmp_path):
    class Toy(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.lin = torch.nn.Linear(width, width)

    M.register_builder("toy_kind", lambda cfg: (Toy(cfg["width"]), dict(cfg)))
    try:
        toy = Toy(3)
        torch.save({"model": toy.state_dict(), "config": {"width": 3}, "kind": "toy_kind"}, tmp_path / "t.pt")
        loaded, cfg = M.load_pretrained(tmp_path / "t.pt")
        assert cfg == {"width": 3}
        torch.testing.assert_close(loaded.lin.weight, toy.lin.weight)
    finally:
        del M.BUILDERS["toy_kind"]


# ----------------------------------------------------------------------------------------------
# The Chinese releases (TencentGameMate/chinese-{wav2vec2,hubert}-{base,large} on the Hugging Face
# hub, pretrained on WenetSpeech L): their config.json as published, written from memory of those
# files. Every field that shapes the encoder is the released value; the values marked "unsure"
# (dropouts, layerdrop, quantizer sizes) shape nothing the loader keeps, and whether a release
# ships preprocessor_config.json with do_normalize true for the base models is not known here
# (the base tests write none: no normalisation). Only num_hidden_layers is cut (12 / 24 -> 2) so
# the test stays fast; every block is built alike, so what holds for 2 holds for 12.
_CONV_512 = dict(
    conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
    num_feat_extract_layers=7, feat_extract_activation="gelu",
)
CHINESE_WAV2VEC2_BASE = dict(
    _CONV_512, model_type="wav2vec2", architectures=["Wav2Vec2ForPreTraining"],
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5,
    hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
    layerdrop=0.1,  # unsure: 0.05 or 0.1 (train-time only)
    final_dropout=0.0, mask_time_prob=0.05, mask_time_length=10, mask_feature_prob=0.0, mask_feature_length=10,
    num_codevector_groups=2, num_codevectors_per_group=320, codevector_dim=256, proj_codevector_dim=256,
    num_negatives=100, contrastive_logits_temperature=0.1, diversity_loss_weight=0.1,
    initializer_range=0.02, vocab_size=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
CHINESE_HUBERT_BASE = dict(
    _CONV_512, model_type="hubert", architectures=["HubertModel"],
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5,
    hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.0,  # unsure: 0.1 / 0.0
    layerdrop=0.1, final_dropout=0.1, mask_time_prob=0.05, mask_time_length=10,
    initializer_range=0.02, vocab_size=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
# The large releases: 1024 wide, 24 blocks of 16 heads, FFN 4096, layer-norm conv stack with biases,
# pre-LN Transformer (the fairseq "large" layout).
_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
CHINESE = {
    "chinese-wav2vec2-base": CHINESE_WAV2VEC2_BASE,
    "chinese-hubert-base": CHINESE_HUBERT_BASE,
    "chinese-wav2vec2-large": {**CHINESE_WAV2VEC2_BASE, **_LARGE,
                               "codevector_dim": 768, "proj_codevector_dim": 768},  # unsure: 768 or 256
    "chinese-hubert-large": {**CHINESE_HUBERT_BASE, **_LARGE},
}


def _chinese_hf(name: str):
    """Randomly initialised transformers model of ``name``'s configuration, 2 Transformer blocks."""
    torch.manual_seed(0)
    values = {**CHINESE[name], "num_hidden_layers": 2}
    if values["model_type"] == "wav2vec2":
        # the wav2vec2 releases as pretraining dirs: weights under "wav2vec2.", quantizer heads beside
        # (unsure whether they were saved from Wav2Vec2ForPreTraining or Wav2Vec2Model: both load)
        return transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**values)).eval()
    return transformers.HubertModel(transformers.HubertConfig(**values)).eval()


def _save_bin_as_released(model, path) -> None:
    """pytorch_model.bin as transformers 4.x wrote these releases: weight norm as weight_g / weight_v."""
    model.config.save_pretrained(path)
    rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for k, v in model.state_dict().items():
        for new_name, old_name in rename.items():
            k = k.replace(new_name, old_name)
        state[k] = v
    torch.save(state, path / "pytorch_model.bin")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("name", ["chinese-wav2vec2-base", "chinese-hubert-base"])
def test_chinese_base_checkpoints(tmp_path, name, fmt):
    hf = _chinese_hf(name)
    _perturb(hf)
    d = tmp_path / name
    if fmt == "safetensors":
        hf.save_pretrained(d)
        assert (d / "model.safetensors").is_file()
    else:
        _save_bin_as_released(hf, d)
        assert not (d / "model.safetensors").exists()
        assert any(k.endswith("weight_g") for k in torch.load(d / "pytorch_model.bin", weights_only=True))
    written = json.loads((d / "config.json").read_text())
    assert {k: written[k] for k in ("feat_extract_norm", "num_conv_pos_embeddings", "hidden_size")} == {
        "feat_extract_norm": "group", "num_conv_pos_embeddings": 128, "hidden_size": 768}
    model, config = M.load_pretrained(d)
    assert config.kind == CHINESE[name]["model_type"]
    assert (config.embed_dim, config.num_layers, config.num_heads, config.ffn_dim) == (768, 2, 12, 3072)
    assert config.conv_layers == ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    assert (config.conv_norm, config.conv_bias, config.layer_norm_first) == ("group_norm", False, False)
    assert (config.pos_conv_kernel, config.pos_conv_groups, config.normalize_waveform) == (128, 16, False)
    x = torch.randn(2, 16000)
    encoder = hf.wav2vec2 if name.startswith("chinese-wav2vec2") else hf
    _assert_layers(model, x, *_hf_layers(encoder, x), False)


@pytest.mark.parametrize("name", ["chinese-hubert-large"])  # chinese-wav2vec2-large: the same path, +3 s
def test_chinese_large_checkpoints_with_normalize(tmp_path, name):
    hf = _chinese_hf(name)
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    # the large (layer-norm) models take zero-mean unit-variance input, as their feature extractor says
    (tmp_path / "preprocessor_config.json").write_text(
        '{"do_normalize": true, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, '
        '"padding_side": "right", "padding_value": 0, "return_attention_mask": true, "sampling_rate": 16000}'
    )
    model, config = M.load_pretrained(tmp_path)
    assert (config.embed_dim, config.num_heads, config.ffn_dim, config.conv_bias) == (1024, 16, 4096, True)
    assert (config.conv_norm, config.layer_norm_first, config.normalize_waveform) == ("layer_norm", True, True)
    x = torch.randn(1, 16000) * 3 + 0.5
    xn = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    encoder = hf.wav2vec2 if name.startswith("chinese-wav2vec2") else hf
    _assert_layers(model, x, *_hf_layers(encoder, xn), True)
