"""Named factories: the released shapes, plus ``*_tiny`` sizes that train on a CPU in tests and
``*_small`` ones (log-mel input) that pretrain on a CPU in minutes.

Every factory takes keyword overrides of its config fields, e.g. ``wav2vec2_base(layerdrop=0.0)``.
Parameter counts (no quantizer, no heads; +D for the mask embedding): wav2vec2_base 94.37M
(= torchaudio ``wav2vec2_base``), wav2vec2_large 315.43M, data2vec_base 93.16M (= HF default).
"""

from __future__ import annotations

from typing import Any, TypeVar

from w2v.models.config import (
    Data2VecAudioConfig,
    EncoderConfig,
    HubertConfig,
    Wav2Vec2Config,
    WavLMConfig,
    fbank_layers,
)
from w2v.models.encoder import SSLEncoder
from w2v.utils import check_config_fields

C = TypeVar("C", bound=EncoderConfig)

TINY_CONV = ((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2
"""Same kernels/strides as the released encoder (400-sample receptive field, 20 ms frames), 64 channels."""

_TINY = dict(
    conv_layers=TINY_CONV,
    embed_dim=64,
    num_layers=2,
    num_heads=4,
    ffn_dim=128,
    pos_conv_kernel=16,
    pos_conv_groups=4,
)

# What 2 CPU cores pretrain in minutes (HuBERT: 4000 updates of 24 s in 16 min): 4 × 128 (0.88M)
# on stacked log-mels. The waveform CNN is most of a conv encoder's CPU time and, at 64 channels,
# where the tiny encoders lose what fbank keeps; log-mels cost nothing. No dropout: a short run
# does not overfit an hour of audio.
_SMALL = dict(
    _TINY, feature_encoder="fbank", conv_layers=fbank_layers(), embed_dim=128, num_layers=4, ffn_dim=512,
    dropout=0.0, attention_dropout=0.0, dropout_input=0.0, layerdrop=0.0,
)

_LARGE = dict(embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096)

# LV60k / HuBERT LARGE: layer norm in every conv block, pre-LN Transformer, normalised waveforms.
_LV60K = dict(
    _LARGE,
    conv_norm="layer_norm",
    conv_bias=True,
    layer_norm_first=True,
    normalize_waveform=True,
    dropout=0.0,
    layerdrop=0.0,
    feature_grad_mult=1.0,
)


def _make(cls: type[C], preset: dict[str, Any], overrides: dict[str, Any]) -> tuple[C, SSLEncoder]:
    check_config_fields(cls, overrides)
    config = cls(**{**preset, **overrides})
    return config, SSLEncoder(config)


def build_model(config: EncoderConfig) -> SSLEncoder:
    """The one builder: rebuilds any family's encoder from its resolved config."""
    return SSLEncoder(config)


def wav2vec2_base(**overrides: Any) -> SSLEncoder:
    """wav2vec 2.0 BASE: 12 × 768, 12 heads (released checkpoints), group-norm conv encoder."""
    return _make(Wav2Vec2Config, {}, overrides)[1]


def wav2vec2_large(**overrides: Any) -> SSLEncoder:
    """wav2vec 2.0 LARGE (LibriSpeech 960 h): 24 × 1024, 16 heads, BASE-style conv encoder, post-LN."""
    return _make(Wav2Vec2Config, _LARGE, overrides)[1]


def wav2vec2_large_lv60k(**overrides: Any) -> SSLEncoder:
    """wav2vec 2.0 LARGE LV-60k: layer-norm conv encoder with bias, pre-LN, normalised input."""
    return _make(Wav2Vec2Config, _LV60K, overrides)[1]


def wav2vec2_tiny(**overrides: Any) -> SSLEncoder:
    """2 × 64 wav2vec 2.0 for CPU tests and toy pre-training."""
    return _make(Wav2Vec2Config, _TINY, overrides)[1]


def wav2vec2_small(**overrides: Any) -> SSLEncoder:
    """4 × 128 on stacked log-mels (``_SMALL``): pretrains in CPU minutes."""
    return _make(Wav2Vec2Config, _SMALL, overrides)[1]


def data2vec_base(**overrides: Any) -> SSLEncoder:
    """data2vec audio BASE: layer-norm conv encoder, 5 stacked k=19 positional convs, normalised input."""
    return _make(Data2VecAudioConfig, {}, overrides)[1]


def data2vec_tiny(**overrides: Any) -> SSLEncoder:
    return _make(Data2VecAudioConfig, dict(_TINY, pos_conv_kernel=5, pos_conv_depth=2), overrides)[1]


def data2vec_small(**overrides: Any) -> SSLEncoder:
    """4 × 128 on stacked log-mels (``_SMALL``): pretrains in CPU minutes."""
    return _make(Data2VecAudioConfig, dict(_SMALL, pos_conv_kernel=5, pos_conv_depth=2), overrides)[1]


def hubert_base(**overrides: Any) -> SSLEncoder:
    """HuBERT BASE: the wav2vec 2.0 BASE encoder."""
    return _make(HubertConfig, {}, overrides)[1]


def hubert_large(**overrides: Any) -> SSLEncoder:
    """HuBERT LARGE: layer-norm conv encoder without bias, pre-LN, normalised input."""
    return _make(HubertConfig, dict(_LV60K, conv_bias=False), overrides)[1]


def hubert_tiny(**overrides: Any) -> SSLEncoder:
    return _make(HubertConfig, _TINY, overrides)[1]


def hubert_small(**overrides: Any) -> SSLEncoder:
    """4 × 128 on stacked log-mels (``_SMALL``): pretrains in CPU minutes."""
    return _make(HubertConfig, _SMALL, overrides)[1]


def wavlm_base(**overrides: Any) -> SSLEncoder:
    """WavLM BASE: BASE encoder with gated relative position bias (320 buckets, 800 frames)."""
    return _make(WavLMConfig, {}, overrides)[1]


def wavlm_tiny(**overrides: Any) -> SSLEncoder:
    return _make(WavLMConfig, dict(_TINY, num_buckets=32, max_distance=64), overrides)[1]


def wavlm_small(**overrides: Any) -> SSLEncoder:
    """4 × 128 on stacked log-mels (``_SMALL``): pretrains in CPU minutes."""
    return _make(WavLMConfig, dict(_SMALL, num_buckets=32, max_distance=64), overrides)[1]


FACTORIES = {
    f.__name__: f
    for f in (
        wav2vec2_base,
        wav2vec2_large,
        wav2vec2_large_lv60k,
        wav2vec2_tiny,
        wav2vec2_small,
        data2vec_base,
        data2vec_tiny,
        data2vec_small,
        hubert_base,
        hubert_large,
        hubert_tiny,
        hubert_small,
        wavlm_base,
        wavlm_tiny,
        wavlm_small,
    )
}
