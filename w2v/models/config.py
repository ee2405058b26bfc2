"""One typed config per encoder family.

All transformer encoders share :class:`EncoderConfig`; a family subclasses it only to add what
its architecture needs (data2vec's stacked positional convolutions, WavLM's relative position
buckets). Shapes are tuples, never strings to ``eval`` (fairseq's ``conv_feature_layers``).

``config_to_dict`` / ``config_from_dict`` give the plain-dict form written into checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

from w2v.utils import check_config_fields

ConvSpec = tuple[tuple[int, int, int], ...]
"""Feature-encoder layers as ``(out_channels, kernel, stride)``."""

WAV2VEC2_CONV: ConvSpec = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
"""The 7-block feature encoder of every released wav2vec 2.0 / HuBERT / data2vec / WavLM model."""


@dataclass
class EncoderConfig:
    """Conv feature encoder + convolutional positional embedding + Transformer.

    Defaults are the wav2vec 2.0 BASE pre-training values (fairseq ``wav2vec2_base_librispeech``).

    Attributes:
        conv_layers: feature-encoder blocks ``(out_channels, kernel, stride)``.
        conv_norm: ``"group_norm"``: one group norm (one group per channel, i.e. normalised over
            time) in the first block only (BASE); ``"layer_norm"``: layer norm over channels in
            every block (LARGE-LV60k, data2vec).
        conv_bias: bias in the feature-encoder convolutions.
        embed_dim: Transformer width D.
        num_layers: Transformer blocks.
        num_heads: attention heads.
        ffn_dim: FFN inner width.
        layer_norm_first: pre-LN blocks (LARGE-LV60k) instead of post-LN (BASE).
        pos_conv_kernel: kernel of the convolutional positional embedding (per layer for data2vec).
        pos_conv_groups: its groups.
        feature_proj_layer_norm: layer norm on the conv features before the projection to D.
        dropout: residual / FFN-output dropout; also after the positional embedding.
        attention_dropout: dropout on attention weights.
        activation_dropout: dropout after the FFN activation.
        dropout_input: dropout on the projected features (before masking).
        layerdrop: probability of skipping a whole Transformer block in training.
        feature_grad_mult: gradient scale of the conv encoder (0.1 in the paper; 0 freezes it,
            1 leaves it alone).
        normalize_waveform: zero-mean / unit-variance each utterance before the conv encoder
            (LV60k, data2vec, HuBERT LARGE checkpoints were trained that way).
        layer_norm_eps: epsilon of every layer norm.
        feature_encoder: ``"conv"``: the CNN on the waveform; ``"fbank"``: stacked log-mel frames
            instead (no parameters, as BEST-RQ and w2v-BERT read log-mels): ``conv_layers`` is then
            one ``(stack × mel bins, 400 + (stack - 1) × 160, stack × 160)`` entry, ``stack`` 25-ms
            windows 10 ms apart per frame, so hop, receptive field and frame counts keep one formula.
    """

    kind: ClassVar[str] = "encoder"

    conv_layers: ConvSpec = WAV2VEC2_CONV
    conv_norm: Literal["group_norm", "layer_norm"] = "group_norm"
    conv_bias: bool = False
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    feature_proj_layer_norm: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    layerdrop: float = 0.05
    feature_grad_mult: float = 0.1
    normalize_waveform: bool = False
    layer_norm_eps: float = 1e-5
    feature_encoder: Literal["conv", "fbank"] = "conv"

    def __post_init__(self) -> None:
        self.conv_layers = tuple(tuple(int(v) for v in layer) for layer in self.conv_layers)
        if any(len(layer) != 3 for layer in self.conv_layers) or not self.conv_layers:
            raise ValueError(
                f"conv_layers must be a non-empty tuple of (channels, kernel, stride); found {self.conv_layers}"
            )
        if self.conv_norm not in ("group_norm", "layer_norm"):
            raise ValueError(f"conv_norm must be 'group_norm' or 'layer_norm'; found {self.conv_norm!r}")
        if self.feature_encoder == "fbank":
            check_fbank_layers(self.conv_layers)
        elif self.feature_encoder != "conv":
            raise ValueError(f"feature_encoder must be 'conv' or 'fbank'; found {self.feature_encoder!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.embed_dim % self.pos_conv_groups:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by pos_conv_groups {self.pos_conv_groups}")

    @property
    def receptive_field(self) -> int:
        """Samples one output frame sees (400 = 25 ms for the standard encoder)."""
        field_ = 1
        for _, kernel, stride in reversed(self.conv_layers):
            field_ = (field_ - 1) * stride + kernel
        return field_

    @property
    def hop_samples(self) -> int:
        """Samples between output frames (320 = 20 ms at 16 kHz for the standard encoder)."""
        shift = 1
        for _, _, stride in self.conv_layers:
            shift *= stride
        return shift

    def num_frames(self, num_samples: int) -> int:
        """Output frames for ``num_samples`` input samples (0 when shorter than the receptive field)."""
        n = num_samples
        for _, kernel, stride in self.conv_layers:
            n = max((n - kernel) // stride + 1, 0)
        return n


FBANK_WINDOW, FBANK_SHIFT = 400, 160
"""Samples per log-mel window (25 ms) and between windows (10 ms) of the fbank feature encoder."""


def fbank_layers(num_mel_bins: int = 80, stack: int = 2) -> ConvSpec:
    """``conv_layers`` of the fbank feature encoder: ``stack`` log-mel frames per encoder frame."""
    return ((stack * num_mel_bins, FBANK_WINDOW + (stack - 1) * FBANK_SHIFT, stack * FBANK_SHIFT),)


def check_fbank_layers(layers: ConvSpec) -> tuple[int, int]:
    """(mel bins, stack) of fbank ``conv_layers``; ``ValueError`` for any other shape."""
    if len(layers) == 1:
        channels, kernel, stride = layers[0]
        stack = stride // FBANK_SHIFT
        if stack >= 1 and channels % stack == 0 and layers == fbank_layers(channels // stack, stack):
            return channels // stack, stack
    raise ValueError(
        f"feature_encoder 'fbank' needs conv_layers ((stack * mel_bins, {FBANK_WINDOW} + (stack - 1) * "
        f"{FBANK_SHIFT}, stack * {FBANK_SHIFT}),), e.g. {fbank_layers()}; found {layers}"
    )


@dataclass
class Wav2Vec2Config(EncoderConfig):
    """wav2vec 2.0 (Baevski et al. 2020)."""

    kind: ClassVar[str] = "wav2vec2"


@dataclass
class HubertConfig(EncoderConfig):
    """HuBERT (Hsu et al. 2021): the wav2vec 2.0 encoder; only the objective differs."""

    kind: ClassVar[str] = "hubert"


@dataclass
class Data2VecAudioConfig(EncoderConfig):
    """data2vec audio (Baevski et al. 2022).

    The positional embedding is ``pos_conv_depth`` stacked (conv k=``pos_conv_kernel``, layer
    norm without affine, GELU) blocks instead of one wide weight-normed conv.
    """

    kind: ClassVar[str] = "data2vec_audio"

    conv_norm: Literal["group_norm", "layer_norm"] = "layer_norm"
    pos_conv_kernel: int = 19
    pos_conv_depth: int = 5
    normalize_waveform: bool = True


@dataclass
class WavLMConfig(EncoderConfig):
    """WavLM (Chen et al. 2021): gated relative position bias in self-attention.

    Attributes:
        num_buckets: relative-position buckets (half per direction).
        max_distance: distance (frames) beyond which every offset shares the last bucket.
    """

    kind: ClassVar[str] = "wavlm"

    num_buckets: int = 320
    max_distance: int = 800


CONFIG_CLASSES: dict[str, type[EncoderConfig]] = {
    cls.kind: cls for cls in (Wav2Vec2Config, HubertConfig, Data2VecAudioConfig, WavLMConfig)
}


def config_to_dict(config: EncoderConfig) -> dict[str, Any]:
    """Plain dict (tuples kept) of a config, for checkpoints and experiment dirs."""
    return dataclasses.asdict(config)


def config_from_dict(kind: str, values: Mapping[str, Any]) -> EncoderConfig:
    """Rebuild the config of family ``kind`` from :func:`config_to_dict` output (or its JSON form).

    A ``frame_shift`` entry (the hop in samples, under its old name) is checked against the
    conv layers and dropped.

    Raises:
        ValueError: unknown family or unknown / misspelled fields (the expected ones are named).
    """
    if kind not in CONFIG_CLASSES:
        raise ValueError(f"Unknown encoder kind {kind!r}; expected one of {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[kind]
    values = dict(values)
    # The hop was once called frame_shift, in samples; frame_shift means seconds everywhere else.
    legacy_hop = values.pop("frame_shift", None)
    check_config_fields(cls, values)
    config = cls(**values)
    if legacy_hop is not None and int(legacy_hop) != config.hop_samples:
        raise ValueError(
            f"frame_shift {legacy_hop} (samples) disagrees with the {config.hop_samples}-sample hop of conv_layers"
        )
    return config


__all__ = [
    "CONFIG_CLASSES",
    "ConvSpec",
    "Data2VecAudioConfig",
    "EncoderConfig",
    "fbank_layers",
    "HubertConfig",
    "WAV2VEC2_CONV",
    "Wav2Vec2Config",
    "WavLMConfig",
    "config_from_dict",
    "config_to_dict",
]
