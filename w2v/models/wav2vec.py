"""wav2vec (Schneider et al. 2019): causal convolutional encoder f: X -> Z and context network g: Z -> C.

fairseq's inference API is kept: ``z = model.feature_extractor(wav)`` and
``c = model.feature_aggregator(z)``, channel-first ``[batch, channels, frames]``; frames are 10 ms
(stride 160 samples at 16 kHz). :meth:`Wav2VecModel.extract_features` gives the frame-first view
shared with the transformer encoders.

Both normalisations are group norm with one group (over channels and time of each utterance);
here it runs over the *valid* frames only, so a padded batch gives each utterance's own result.
The context network is causal (left padding; fairseq replicates the first frame), so padding on the
right never leaks backwards.
The future-prediction loss lives in :mod:`w2v.ssl.future_prediction`.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from w2v.models.loading import load_state_dict_strict, register_builder, register_fairseq_converter
from w2v.models.padding import lengths_to_padding_mask
from w2v.utils import check_config_fields

ConvSpec = tuple[int, int, int]  # (channels, kernel, stride)


@dataclass
class Wav2VecConfig:
    kind: ClassVar[str] = "wav2vec"

    encoder_layers: tuple[ConvSpec, ...] = ((512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2))
    encoder_skip_connections: bool = False
    context_layers: tuple[ConvSpec, ...] = ((512, 3, 1),) * 9
    context_skip_connections: bool = False
    context_conv_bias: bool = True
    context_pad: str = "replicate"  # left padding of the causal context convs: "replicate" (fairseq default) | "zero"
    residual_scale: float = 0.5  # skip sums are multiplied by sqrt(residual_scale)
    log_compression: bool = True  # z = log(|f(x)| + 1)
    dropout: float = 0.0  # after every conv (fairseq trains with 0.0 in f, 0.0..0.1 in g)
    feature_dropout: float = 0.0  # on z before the context network

    def __post_init__(self) -> None:
        # Accept lists (e.g. a config read back from a checkpoint) and normalise to tuples.
        self.encoder_layers = tuple(tuple(int(v) for v in spec) for spec in self.encoder_layers)
        self.context_layers = tuple(tuple(int(v) for v in spec) for spec in self.context_layers)

    @property
    def hop_samples(self) -> int:
        """Samples between output frames (160 = 10 ms at 16 kHz for the standard encoder)."""
        return math.prod(spec[2] for spec in self.encoder_layers)


def _valid_mask(lengths: Tensor | None, frames: int, device) -> Tensor | None:
    """``[batch, frames]`` True at valid frames, or None when nothing is padded."""
    return None if lengths is None else ~lengths_to_padding_mask(lengths.to(device), frames)


class MaskedGroupNorm(nn.Module):
    """Group norm with one group over ``[channels, valid frames]`` of each utterance, with affine."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x: ``[batch, channels, frames]``; valid: ``[batch, frames]`` or None."""
        xf = x.float()
        if valid is None:
            mean = xf.mean(dim=(1, 2), keepdim=True)
            var = xf.var(dim=(1, 2), unbiased=False, keepdim=True)
        else:
            w = valid[:, None, :].to(xf.dtype)
            count = (w.sum(dim=(1, 2), keepdim=True) * x.shape[1]).clamp_min(1.0)
            mean = (xf * w).sum(dim=(1, 2), keepdim=True) / count
            var = ((xf - mean).pow(2) * w).sum(dim=(1, 2), keepdim=True) / count
        y = (xf - mean) / torch.sqrt(var + self.eps)
        y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y.to(x.dtype)


class ConvBlock(nn.Module):
    """Conv1d -> dropout -> one-group norm -> ReLU; ``causal_pad`` left-pads by kernel - 1 frames
    (``pad_mode`` "replicate" repeats the first frame, "zero" pads with zeros)."""

    def __init__(
        self, in_channels: int, spec: ConvSpec, dropout: float, causal_pad: bool, bias: bool, pad_mode: str = "zero"
    ) -> None:
        super().__init__()
        channels, kernel, stride = spec
        if pad_mode not in ("zero", "replicate"):
            raise ValueError(f"pad_mode must be 'zero' or 'replicate', got {pad_mode!r}")
        self.kernel, self.stride = kernel, stride
        self.causal_pad = causal_pad
        self.pad_mode = pad_mode
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm = MaskedGroupNorm(channels)

    def out_lengths(self, lengths: Tensor) -> Tensor:
        if self.causal_pad:
            return torch.div(lengths - 1, self.stride, rounding_mode="floor") + 1
        return (torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1).clamp(min=0)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x: ``[batch, in_channels, frames]`` -> ``[batch, channels, frames']``."""
        if self.causal_pad and self.kernel > 1:
            if self.pad_mode == "replicate" and x.shape[-1] > 0:
                x = F.pad(x, (self.kernel - 1, 0), mode="replicate")
            else:
                x = F.pad(x, (self.kernel - 1, 0))
        if x.shape[-1] < self.kernel:  # too short for one output frame
            out = x.new_zeros(x.shape[0], self.conv.out_channels, 0)
            return out, None if lengths is None else torch.zeros_like(lengths)
        x = self.dropout(self.conv(x))
        if lengths is not None:
            lengths = self.out_lengths(lengths).clamp(max=x.shape[-1])
        x = F.relu(self.norm(x, _valid_mask(lengths, x.shape[-1], x.device)))
        return x, lengths


def _skip(x: Tensor, residual: Tensor, scale: float) -> Tensor:
    if residual.shape[-1] != x.shape[-1]:  # strided layer: subsample the residual
        step = max(residual.shape[-1] // max(x.shape[-1], 1), 1)
        residual = residual[..., ::step][..., : x.shape[-1]]
    return (x + residual) * scale


class Wav2VecFeatureExtractor(nn.Module):
    """Encoder f: ``[batch, samples]`` -> z ``[batch, channels, frames]``."""

    def __init__(self, config: Wav2VecConfig) -> None:
        super().__init__()
        self.config = config
        blocks, in_ch = [], 1
        for spec in config.encoder_layers:
            blocks.append(ConvBlock(in_ch, spec, config.dropout, causal_pad=False, bias=False))
            in_ch = spec[0]
        self.conv_layers = nn.ModuleList(blocks)
        self.out_channels = in_ch
        self.residual_scale = math.sqrt(config.residual_scale)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None):
        """
        Args:
            waveforms: ``[batch, samples]`` at 16 kHz.
            lengths: optional ``[batch]`` valid samples.

        Returns:
            z ``[batch, channels, frames]`` when ``lengths`` is None (fairseq's API), else
            ``(z, frame_lengths)``.
        """
        if waveforms.dim() != 2:
            raise ValueError(f"Expected 2D (batch, time) audio. Found: {list(waveforms.shape)}")
        x, out_lengths = waveforms[:, None, :], lengths
        for block in self.conv_layers:
            residual = x
            x, out_lengths = block(x, out_lengths)
            if self.config.encoder_skip_connections and x.shape[1] == residual.shape[1] and x.shape[-1] > 0:
                x = _skip(x, residual, self.residual_scale)
        if self.config.log_compression:
            x = torch.log(x.abs() + 1.0)
        return x if lengths is None else (x, out_lengths)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for block in self.conv_layers:
            lengths = block.out_lengths(lengths)
        return lengths


class Wav2VecContextNetwork(nn.Module):
    """Causal context network g: z ``[batch, C, frames]`` -> c ``[batch, C', frames]``."""

    def __init__(self, config: Wav2VecConfig, in_channels: int) -> None:
        super().__init__()
        self.config = config
        self.feature_dropout = nn.Dropout(config.feature_dropout)
        blocks, projections = [], []
        for spec in config.context_layers:
            if spec[2] != 1:
                raise ValueError(f"Context layers must have stride 1. Found: {spec}")
            blocks.append(
                ConvBlock(in_channels, spec, config.dropout, True, config.context_conv_bias, config.context_pad)
            )
            needs_proj = config.context_skip_connections and in_channels != spec[0]
            projections.append(nn.Conv1d(in_channels, spec[0], 1, bias=False) if needs_proj else nn.Identity())
            in_channels = spec[0]
        self.conv_layers = nn.ModuleList(blocks)
        self.residual_projections = nn.ModuleList(projections)
        self.out_channels = in_channels
        self.residual_scale = math.sqrt(config.residual_scale)

    def forward_layers(self, z: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """Every layer's output, channel-first."""
        x, outputs = self.feature_dropout(z), []
        for block, proj in zip(self.conv_layers, self.residual_projections):
            residual = x
            x, _ = block(x, lengths)
            if self.config.context_skip_connections:
                x = (x + proj(residual)) * self.residual_scale
            outputs.append(x)
        return outputs

    def forward(self, z: Tensor, lengths: Tensor | None = None) -> Tensor:
        """z: ``[batch, C, frames]`` -> c ``[batch, C', frames]``."""
        if z.dim() != 3:
            raise ValueError(f"Expected [batch, channels, frames] features. Found: {list(z.shape)}")
        outputs = self.forward_layers(z, lengths)
        return outputs[-1] if outputs else z


class Wav2VecModel(nn.Module):
    """wav2vec: ``feature_extractor`` (f) and ``feature_aggregator`` (g)."""

    def __init__(self, config: Wav2VecConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = Wav2VecFeatureExtractor(config)
        self.feature_aggregator = Wav2VecContextNetwork(config, self.feature_extractor.out_channels)


    def forward(self, waveforms: Tensor, lengths: Tensor | None = None):
        """Returns ``(z [B, C, F], c [B, C', F], frame_lengths | None)``."""
        if lengths is None:
            z = self.feature_extractor(waveforms)
            frame_lengths = None
        else:
            z, frame_lengths = self.feature_extractor(waveforms, lengths)
        return z, self.feature_aggregator(z, frame_lengths), frame_lengths

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None, num_layers: int | None = None):
        """Frame-first outputs of every layer, like the transformer encoders.

        Args:
            waveforms: ``[batch, samples]``.
            lengths: optional ``[batch]`` valid samples.
            num_layers: stop after this many context layers.

        Returns:
            ``(outputs, frame_lengths)``: ``outputs[i]`` is context layer ``i + 1`` (``outputs[-1]``
            is c), each ``[batch, frames, channels]``, frames at 10 ms; indexed like the transformer
            encoders' blocks. z itself comes from :attr:`feature_extractor`.
        """
        if lengths is None:
            z, frame_lengths = self.feature_extractor(waveforms), None
        else:
            z, frame_lengths = self.feature_extractor(waveforms, lengths)
        layers = self.feature_aggregator.forward_layers(z, frame_lengths)
        if num_layers is not None:
            layers = layers[:num_layers]
        return [t.transpose(1, 2) for t in layers], frame_lengths


def wav2vec_model(config: Wav2VecConfig) -> Wav2VecModel:
    """The one builder from a (resolved) config."""
    return Wav2VecModel(config)


def wav2vec_base(**overrides) -> Wav2VecModel:
    """Paper's base model: 5 encoder layers, 9 context layers of kernel 3 (≈ 210 ms)."""
    return Wav2VecModel(Wav2VecConfig(**overrides))


def wav2vec_large_config(**overrides) -> Wav2VecConfig:
    args = dict(
        encoder_layers=Wav2VecConfig.encoder_layers + ((512, 1, 1), (512, 1, 1)),
        encoder_skip_connections=True,
        context_layers=tuple((512, k, 1) for k in range(2, 14)),
        context_skip_connections=True,
    )
    args.update(overrides)
    return Wav2VecConfig(**args)


def wav2vec_large(**overrides) -> Wav2VecModel:
    """wav2vec large: 2 extra (512, 1, 1) encoder layers, 12 context layers of kernels 2..13 (≈ 810 ms), skips."""
    return Wav2VecModel(wav2vec_large_config(**overrides))


def wav2vec_tiny_config(**overrides) -> Wav2VecConfig:
    args = dict(
        encoder_layers=((32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2)),
        context_layers=((32, 3, 1),) * 3,
    )
    args.update(overrides)
    return Wav2VecConfig(**args)


def wav2vec_tiny(**overrides) -> Wav2VecModel:
    """Same strides (10 ms frames), 32 channels, 3 context layers: for tests and CPU smoke runs."""
    return Wav2VecModel(wav2vec_tiny_config(**overrides))


def _build_from_dict(values: Mapping[str, Any]) -> tuple[Wav2VecModel, Wav2VecConfig]:
    check_config_fields(Wav2VecConfig, values)
    config = Wav2VecConfig(**dict(values))
    return Wav2VecModel(config), config


def _parse_layers(value: Any) -> tuple[ConvSpec, ...]:
    """fairseq stores layer lists as Python literals in strings; read them without ``eval``."""
    if isinstance(value, str):
        value = ast.literal_eval(value)
    return tuple(tuple(int(v) for v in spec) for spec in value)


def config_from_fairseq(model_cfg: Mapping[str, Any]) -> Wav2VecConfig:
    """Our config from a fairseq ``wav2vec`` model config (argparse ``args`` or hydra ``cfg.model``)."""
    if str(model_cfg.get("vq_type", "none")) != "none":
        raise ValueError("fairseq vq-wav2vec checkpoints are not supported: their quantizers differ from ours")
    if str(model_cfg.get("aggregator", "cnn")) != "cnn":
        raise ValueError(f"Only the convolutional context network is supported; found {model_cfg.get('aggregator')!r}")
    defaults = Wav2VecConfig()
    return Wav2VecConfig(
        encoder_layers=_parse_layers(model_cfg.get("conv_feature_layers", defaults.encoder_layers)),
        encoder_skip_connections=bool(model_cfg.get("skip_connections_feat", False)),
        context_layers=_parse_layers(model_cfg.get("conv_aggregator_layers", defaults.context_layers)),
        context_skip_connections=bool(model_cfg.get("skip_connections_agg", False)),
        context_conv_bias=not bool(model_cfg.get("no_conv_bias", False)),
        context_pad="zero" if model_cfg.get("agg_zero_pad", False) else "replicate",
        residual_scale=float(model_cfg.get("residual_scale", 0.5)),
        log_compression=bool(model_cfg.get("log_compression", False)),
    )


# fairseq's blocks are nn.Sequential: encoder (conv, dropout, norm, relu), context (pad, conv, dropout, norm, relu).
_FAIRSEQ_KEYS = [
    (re.compile(r"feature_extractor\.conv_layers\.(\d+)\.0\.weight"), r"feature_extractor.conv_layers.\1.conv.weight"),
    (re.compile(r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)"), r"feature_extractor.conv_layers.\1.norm.\2"),
    (re.compile(r"feature_aggregator\.conv_layers\.(\d+)\.1\.(weight|bias)"), r"feature_aggregator.conv_layers.\1.conv.\2"),
    (re.compile(r"feature_aggregator\.conv_layers\.(\d+)\.3\.(weight|bias)"), r"feature_aggregator.conv_layers.\1.norm.\2"),
    (re.compile(r"feature_aggregator\.residual_proj\.(\d+)\.weight"), r"feature_aggregator.residual_projections.\1.weight"),
]


def convert_fairseq_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fairseq ``Wav2VecModel`` weights -> ours; the prediction head (``wav2vec_predictions``) is dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith("wav2vec_predictions."):
            continue
        for pattern, target in _FAIRSEQ_KEYS:
            if pattern.fullmatch(key):
                out[pattern.sub(target, key)] = value
                break
        else:
            raise ValueError(f"Unexpected key in a fairseq wav2vec checkpoint: {key}")
    return out


def _from_fairseq(model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], state: Mapping[str, Tensor]):
    config = config_from_fairseq(model_cfg)
    model = Wav2VecModel(config)
    converted = convert_fairseq_state_dict(state)
    # non_affine_group_norm checkpoints carry no norm weights: keep the identity affine.
    optional = tuple(k for k in model.state_dict() if ".norm." in k) if model_cfg.get("non_affine_group_norm") else ()
    load_state_dict_strict(model, converted, "fairseq wav2vec checkpoint", optional=optional)
    return model, config


register_builder(Wav2VecConfig.kind, _build_from_dict)
register_fairseq_converter("wav2vec", _from_fairseq)
