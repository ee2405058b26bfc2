"""``load_pretrained``: fairseq checkpoints, Hugging Face model dirs and our own checkpoints.

Neither fairseq nor transformers is needed at runtime: configs are read as plain data, HF
``model.safetensors`` by a small reader here (preferred over ``pytorch_model.bin``), and every
``.pt`` / ``.bin`` through :func:`w2v.serialization.load`, which runs no code from the file and
reads fairseq's pickled configs (argparse, omegaconf) as inert stand-ins.

Our checkpoint format (ARCHITECTURE.md) is ``{"model": state_dict, "config": dict, "kind": str}``;
one builder per kind rebuilds the model. Families outside this package (wav2vec 1.0, vq-wav2vec
in ``w2v.models.wav2vec`` / ``w2v.models.vq_wav2vec``) plug in through :func:`register_builder`
and :func:`register_fairseq_converter`; a kind not yet registered triggers an import of
``w2v.models.<kind>``, whose import is expected to register it.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import re
import struct
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from w2v.models.config import (
    CONFIG_CLASSES,
    WAV2VEC2_CONV,
    Data2VecAudioConfig,
    EncoderConfig,
    HubertConfig,
    Wav2Vec2Config,
    WavLMConfig,
    config_from_dict,
)
from w2v.models.encoder import SSLEncoder
from w2v.serialization import load as load_file
from w2v.serialization import plain
from w2v.utils import atomic_torch_save

log = logging.getLogger(__name__)

Builder = Callable[[Mapping[str, Any]], tuple[nn.Module, Any]]
"""config dict (as saved) -> (model, typed config)."""
FairseqConverter = Callable[[Mapping[str, Any], Mapping[str, Any], dict[str, Tensor]], tuple[nn.Module, Any]]
"""(model cfg dict, task cfg dict, state dict) -> (model with weights loaded, typed config)."""

BUILDERS: dict[str, Builder] = {}
FAIRSEQ_CONVERTERS: dict[str, FairseqConverter] = {}


def register_builder(kind: str, builder: Builder) -> None:
    """Make ``load_pretrained`` rebuild our checkpoints whose ``"kind"`` is ``kind``."""
    BUILDERS[kind] = builder


def register_fairseq_converter(name: str, converter: FairseqConverter) -> None:
    """Make ``load_pretrained`` read fairseq checkpoints whose model ``_name`` / ``arch`` is ``name``."""
    FAIRSEQ_CONVERTERS[name] = converter


def _encoder_builder(kind: str) -> Builder:
    def build(values: Mapping[str, Any]) -> tuple[nn.Module, Any]:
        config = config_from_dict(kind, values)
        return SSLEncoder(config), config

    return build


for _kind in CONFIG_CLASSES:
    register_builder(_kind, _encoder_builder(_kind))


def _lookup(registry: dict[str, Any], key: str, what: str) -> Any:
    if key not in registry and re.fullmatch(r"[a-z0-9_]+", key):
        try:  # families living in their own module register themselves on import
            importlib.import_module(f"w2v.models.{key}")
        except ModuleNotFoundError:
            pass
    if key not in registry:
        raise ValueError(f"Unknown {what} {key!r}; expected one of {sorted(registry)}")
    return registry[key]


# ----------------------------------------------------------------------------------------------
# Entry points


def load_pretrained(path: str | Path) -> tuple[nn.Module, Any]:
    """Load a pretrained encoder in eval mode.

    Args:
        path: a fairseq checkpoint ``.pt`` (wav2vec 2.0, HuBERT, data2vec audio, their CTC
            fine-tuned versions, or any registered family such as wav2vec 1.0); a Hugging Face
            model directory (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) of
            Wav2Vec2, HuBERT, WavLM or Data2VecAudio; or a checkpoint of this project
            ``{"model", "config", "kind"}``.
    Returns:
        ``(model, config)``. Pre-training and fine-tuning heads (quantizer, projections, CTC
        output layers) are dropped: the model is the encoder.
    Raises:
        FileNotFoundError, ValueError: unreadable input, unknown kind, or weights that do not
            fit the architecture (missing / unexpected keys, wrong shapes are named).
        w2v.serialization.CheckpointError (a ValueError): a file that is truncated, corrupt, or
            whose pickle would call anything but tensors, containers and configs.
    """
    path = Path(path)
    if path.is_dir():
        model, config = _load_huggingface(path)
    elif path.is_file():
        ckpt = load_file(path)
        if not isinstance(ckpt, Mapping):
            raise ValueError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
        if "kind" in ckpt and "config" in ckpt and "model" in ckpt:
            model, config = _load_own(ckpt, path)
        elif "model" in ckpt and ("cfg" in ckpt or "args" in ckpt):
            model, config = _load_fairseq(ckpt, path)
        else:
            raise ValueError(
                f"{path}: not a known checkpoint; expected keys {{'model', 'config', 'kind'}} (w2v) or "
                f"{{'model', 'cfg'|'args'}} (fairseq); found {sorted(ckpt)}"
            )
    else:
        raise FileNotFoundError(f"No checkpoint file or model directory at {path}")
    return model.eval(), config


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> None:
    """Write ``{"model", "config", "kind", **extra}`` atomically; ``load_pretrained`` reads it back.

    ``model`` must carry a dataclass ``config`` with a ``kind`` (every encoder here does).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "kind"):
        raise ValueError(f"{type(model).__name__} has no typed config with a kind; cannot write a checkpoint")
    import dataclasses

    atomic_torch_save(
        {"model": model.state_dict(), "config": dataclasses.asdict(config), "kind": config.kind, **extra}, path
    )


def load_state_dict_strict(
    model: nn.Module, state: Mapping[str, Tensor], source: str, optional: tuple[str, ...] = ()
) -> None:
    """``load_state_dict`` that names what is missing, unexpected or mis-shaped.

    Args:
        optional: keys allowed to be missing (they keep their initial value).
    """
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not fit {type(model).__name__}: "
            f"missing {len(missing)} keys {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
            f"unexpected {len(unexpected)} keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{source}: {key} has shape {list(value.shape)}; expected {list(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=False)


def _load_own(ckpt: Mapping[str, Any], path: Path) -> tuple[nn.Module, Any]:
    builder = _lookup(BUILDERS, str(ckpt["kind"]), "checkpoint kind")
    model, config = builder(ckpt["config"])
    load_state_dict_strict(model, ckpt["model"], str(path))
    return model, config


# ----------------------------------------------------------------------------------------------
# Reading files without fairseq / transformers / safetensors


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file: 8-byte little-endian header size, JSON header, raw data."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    buffer = bytearray(data[8 + header_len :])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        flat = torch.frombuffer(buffer, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors


# ----------------------------------------------------------------------------------------------
# Hugging Face


_HF_FAMILIES: dict[str, tuple[type[EncoderConfig], str]] = {
    # model_type -> (config class, prefix of the base model inside task models such as *ForCTC)
    "wav2vec2": (Wav2Vec2Config, "wav2vec2."),
    "hubert": (HubertConfig, "hubert."),
    "wavlm": (WavLMConfig, "wavlm."),
    "data2vec-audio": (Data2VecAudioConfig, "data2vec_audio."),
}
_HF_HEADS = ("lm_head.", "quantizer.", "project_hid.", "project_q.", "projector.", "classifier.", "dropout_features.")


def _hf_config(hf: Mapping[str, Any], normalize: bool) -> EncoderConfig:
    model_type = hf.get("model_type")
    if model_type not in _HF_FAMILIES:
        raise ValueError(f"Unsupported Hugging Face model_type {model_type!r}; expected one of {sorted(_HF_FAMILIES)}")
    for key, ok in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu")):
        if hf.get(key, ok) != ok:
            raise ValueError(f"Unsupported {key}={hf[key]!r}; expected {ok!r}")
    for key in ("conv_pos_batch_norm", "add_adapter"):
        if hf.get(key):
            raise ValueError(f"Unsupported Hugging Face option {key}=True")
    cls = _HF_FAMILIES[model_type][0]
    conv = tuple(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"]))
    values: dict[str, Any] = dict(
        conv_layers=conv,
        # data2vec-audio has layer-normed conv blocks and no feat_extract_norm field
        conv_norm=(
            "layer_norm" if cls is Data2VecAudioConfig or hf.get("feat_extract_norm") == "layer" else "group_norm"
        ),
        conv_bias=bool(hf.get("conv_bias", False)),
        embed_dim=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"],
        layer_norm_first=bool(hf.get("do_stable_layer_norm", False)),
        pos_conv_groups=hf.get("num_conv_pos_embedding_groups", 16),
        feature_proj_layer_norm=bool(hf.get("feat_proj_layer_norm", True)),
        dropout=hf.get("hidden_dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        activation_dropout=hf.get("activation_dropout", 0.0),
        dropout_input=hf.get("feat_proj_dropout", 0.0),
        layerdrop=hf.get("layerdrop", 0.0),
        feature_grad_mult=1.0,
        normalize_waveform=normalize,
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
    )
    if cls is Data2VecAudioConfig:
        values.update(pos_conv_kernel=hf.get("conv_pos_kernel_size", 19), pos_conv_depth=hf["num_conv_pos_embeddings"])
    else:
        values.update(pos_conv_kernel=hf.get("num_conv_pos_embeddings", 128))
    if cls is WavLMConfig:
        values.update(num_buckets=hf.get("num_buckets", 320), max_distance=hf.get("max_bucket_distance", 800))
    return cls(**values)


def _hf_weights(path: Path) -> dict[str, Tensor]:
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")
    if (path / "model.safetensors.index.json").is_file():
        index = json.loads((path / "model.safetensors.index.json").read_text())
        state: dict[str, Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(read_safetensors(path / shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        return load_file(path / "pytorch_model.bin")
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _load_huggingface(path: Path) -> tuple[nn.Module, Any]:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: a Hugging Face model directory needs config.json")
    hf = json.loads((path / "config.json").read_text())
    normalize = False
    if (path / "preprocessor_config.json").is_file():
        normalize = bool(json.loads((path / "preprocessor_config.json").read_text()).get("do_normalize", False))
    config = _hf_config(hf, normalize)
    prefix = _HF_FAMILIES[hf["model_type"]][1]
    raw = _hf_weights(path)
    if any(k.startswith(prefix) for k in raw):
        raw = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
    raw = {k: v for k, v in raw.items() if not k.startswith(_HF_HEADS)}
    model = SSLEncoder(config)
    state = convert_hf_state_dict(raw, wavlm=isinstance(config, WavLMConfig))
    load_state_dict_strict(model, state, str(path), optional=("mask_embedding",))
    return model, config


_HF_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)",
     r"feature_extractor.conv_layers.\1.\2.\3"),
    (r"feature_projection\.(layer_norm|projection)\.(weight|bias)", r"encoder.feature_projection.\1.\2"),
    (r"masked_spec_embed", r"mask_embedding"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)",
     r"encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)",
     r"encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.transformer.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.(weight|bias)",
     r"encoder.transformer.pos_conv_embed.layers.\1.conv.\2"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"encoder.transformer.layers.\1.attention.\2.\3"),
    (r"encoder\.layers\.(\d+)\.attention\.(gru_rel_pos_const|gru_rel_pos_linear\.weight|gru_rel_pos_linear\.bias"
     r"|rel_attn_embed\.weight)", r"encoder.transformer.layers.\1.attention.\2"),
    (r"encoder\.layers\.(\d+)\.(layer_norm|final_layer_norm)\.(weight|bias)", r"encoder.transformer.layers.\1.\2.\3"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.(intermediate_dense|output_dense)\.(weight|bias)",
     r"encoder.transformer.layers.\1.feed_forward.\2.\3"),
]


def _rename(state: Mapping[str, Tensor], rules: list[tuple[str, str]], source: str) -> dict[str, Tensor]:
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{source}: unexpected keys {sorted(unknown)[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


def _fuse_wavlm_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio's WavLM attention keeps q, k, v in one ``nn.MultiheadAttention`` in-projection."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".attention.q_proj.weight")]:
        base = key[: -len("q_proj.weight")]
        for part in ("weight", "bias"):
            qkv = [out.pop(f"{base}{p}_proj.{part}") for p in ("q", "k", "v")]
            out[f"{base}attention.in_proj_{part}"] = torch.cat(qkv, 0)
        for part in ("weight", "bias"):
            out[f"{base}attention.out_proj.{part}"] = out.pop(f"{base}out_proj.{part}")
    return out


def convert_hf_state_dict(state: Mapping[str, Tensor], wavlm: bool = False) -> dict[str, Tensor]:
    """HF ``Wav2Vec2Model`` / ``HubertModel`` / ``WavLMModel`` / ``Data2VecAudioModel`` keys → ours."""
    out = _rename(state, _HF_RULES, "Hugging Face state dict")
    return _fuse_wavlm_qkv(out) if wavlm else out


# ----------------------------------------------------------------------------------------------
# fairseq


_FAIRSEQ_FAMILIES: dict[str, type[EncoderConfig]] = {
    "wav2vec2": Wav2Vec2Config,
    "hubert": HubertConfig,
    "data2vec_audio": Data2VecAudioConfig,
}
_FAIRSEQ_FINETUNED = ("wav2vec_ctc", "wav2vec_seq2seq", "hubert_ctc", "hubert_seq2seq", "data2vec_ctc")
_FAIRSEQ_HEADS = (
    "quantizer.", "project_q.", "final_proj.", "label_embs_concat", "target_glu.", "project_inp.",
    "ema.", "_ema", "decoder.", "proj.",
)


def parse_conv_layers(spec: str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's ``conv_feature_layers`` string (``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``) without ``eval``:
    only list/tuple literals of ints, ``+`` and ``*`` by an int are accepted."""

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [walk(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = walk(node.left), walk(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"Unsupported conv_feature_layers syntax: {ast.dump(node)[:60]}")

    layers = walk(ast.parse(spec, mode="eval"))
    return tuple(tuple(int(v) for v in layer) for layer in layers)


def _fairseq_cfg(ckpt: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model cfg, task cfg) as plain dicts, from ``cfg`` (hydra era) or ``args`` (argparse era)."""
    if ckpt.get("cfg") is not None:
        cfg = plain(ckpt["cfg"])
        return dict(cfg.get("model") or {}), dict(cfg.get("task") or {})
    args = plain(ckpt["args"])
    model = dict(args)
    model.setdefault("_name", args.get("arch"))
    return model, args


def _fairseq_encoder_config(
    cls: type[EncoderConfig], model: Mapping[str, Any], task: Mapping[str, Any]
) -> EncoderConfig:
    for key, ok in (("activation_fn", "gelu"), ("layer_type", "transformer")):
        if model.get(key, ok) != ok:
            raise ValueError(f"Unsupported fairseq {key}={model[key]!r}; expected {ok!r}")
    data2vec = cls is Data2VecAudioConfig  # fairseq's Data2VecAudioConfig has other defaults
    depth = int(model.get("conv_pos_depth", 5 if data2vec else 1) or 1)
    if not data2vec and depth > 1:
        raise ValueError(f"Unsupported fairseq conv_pos_depth={depth} for {cls.kind}; expected 1")
    spec = model.get("conv_feature_layers")
    values: dict[str, Any] = dict(
        conv_layers=parse_conv_layers(spec) if isinstance(spec, str) else WAV2VEC2_CONV,
        conv_norm=(
            "layer_norm"
            if model.get("extractor_mode", "layer_norm" if data2vec else "default") == "layer_norm"
            else "group_norm"
        ),
        conv_bias=bool(model.get("conv_bias", False)),
        embed_dim=int(model.get("encoder_embed_dim", 768)),
        num_layers=int(model.get("encoder_layers", 12)),
        num_heads=int(model.get("encoder_attention_heads", 12)),
        ffn_dim=int(model.get("encoder_ffn_embed_dim", 3072)),
        layer_norm_first=bool(model.get("layer_norm_first", False)),
        pos_conv_groups=int(model.get("conv_pos_groups", 16)),
        dropout=float(model.get("dropout", 0.1)),
        attention_dropout=float(model.get("attention_dropout", 0.1)),
        activation_dropout=float(model.get("activation_dropout", 0.0)),
        dropout_input=float(model.get("dropout_input", 0.0)),
        layerdrop=float(model.get("encoder_layerdrop", model.get("layerdrop", 0.0))),
        feature_grad_mult=float(model.get("feature_grad_mult", 1.0)),
        normalize_waveform=bool(task.get("normalize", model.get("normalize", False))),
    )
    if data2vec:
        width = int(model.get("conv_pos_width", 95))
        values.update(pos_conv_kernel=max(3, width // depth), pos_conv_depth=depth)
    else:
        values.update(pos_conv_kernel=int(model.get("conv_pos", 128)))
    return cls(**values)


_FAIRSEQ_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
    (r"mask_emb", r"mask_embedding"),
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
     r"encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
     r"encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.transformer.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv\.(\d+)\.0\.(weight|bias)", r"encoder.transformer.pos_conv_embed.layers.\1.conv.\2"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"encoder.transformer.layers.\1.attention.\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.transformer.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.transformer.layers.\1.final_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
     r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.transformer.layers.\1.feed_forward.output_dense.\2"),
]


def convert_fairseq_state_dict(state: Mapping[str, Tensor], data2vec: bool = False) -> dict[str, Tensor]:
    """fairseq ``Wav2Vec2Model`` / ``HubertModel`` / ``Data2VecAudioModel`` keys → ours (heads dropped)."""
    kept = {k: v for k, v in state.items() if not k.startswith(_FAIRSEQ_HEADS)}
    rules = _FAIRSEQ_RULES
    if data2vec:  # "encoder.pos_conv.0.0.weight" is a stacked conv, not the weight-normed one
        rules = [r for r in rules if not r[0].startswith(r"encoder\.pos_conv\.0")]
    return _rename(kept, rules, "fairseq state dict")


def _convert_fairseq_encoder(
    model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], state: dict[str, Tensor]
) -> tuple[nn.Module, Any]:
    cls = _FAIRSEQ_FAMILIES[model_cfg["_name"]]
    config = _fairseq_encoder_config(cls, model_cfg, task_cfg)
    model = SSLEncoder(config)
    converted = convert_fairseq_state_dict(state, data2vec=cls is Data2VecAudioConfig)
    load_state_dict_strict(model, converted, f"fairseq {model_cfg['_name']} checkpoint", optional=("mask_embedding",))
    return model, config


for _name in _FAIRSEQ_FAMILIES:
    register_fairseq_converter(_name, _convert_fairseq_encoder)


def _load_fairseq(ckpt: Mapping[str, Any], path: Path) -> tuple[nn.Module, Any]:
    model_cfg, task_cfg = _fairseq_cfg(ckpt)
    state = dict(ckpt["model"])
    name = model_cfg.get("_name")
    if name in _FAIRSEQ_FINETUNED:
        # The pre-trained encoder sits under w2v_encoder.w2v_model with its own config.
        inner = model_cfg.get("w2v_args")
        if inner is None:
            raise ValueError(f"{path}: fine-tuned fairseq checkpoint without w2v_args; cannot rebuild its encoder")
        inner = plain(inner)
        if "model" in inner:
            model_cfg, task_cfg = dict(inner["model"]), dict(inner.get("task") or {})
        else:  # argparse era
            model_cfg, task_cfg = dict(inner), dict(inner)
            model_cfg.setdefault("_name", inner.get("arch"))
        prefix = "w2v_encoder.w2v_model."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        name = model_cfg.get("_name")
    if name is None:
        raise ValueError(f"{path}: fairseq checkpoint without a model name (cfg.model._name or args.arch)")
    converter = _lookup(FAIRSEQ_CONVERTERS, str(name), "fairseq model")
    return converter(model_cfg, task_cfg, state)


__all__ = [
    "BUILDERS",
    "FAIRSEQ_CONVERTERS",
    "convert_fairseq_state_dict",
    "convert_hf_state_dict",
    "load_pretrained",
    "load_state_dict_strict",
    "parse_conv_layers",
    "read_safetensors",
    "register_builder",
    "register_fairseq_converter",
    "save_checkpoint",
]
