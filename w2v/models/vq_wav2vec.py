"""vq-wav2vec (Baevski et al. 2019): wav2vec encoder -> quantizer -> context network.

``z = model.feature_extractor(wav)`` (``[batch, C, frames]``, 10 ms), ``codes = model.quantize(z)[1]``
gives the discrete units (``[batch, frames, G]``), ``c = model.feature_aggregator(model.quantize(z)[0])``.
The quantizers (Gumbel-softmax or k-means, G = 2 groups x V = 320 codewords) are in
:mod:`w2v.models.quantizers`; the future-prediction loss (:mod:`w2v.ssl.future_prediction`) scores
the quantized frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from torch import Tensor, nn

from w2v.models.loading import register_builder
from w2v.models.padding import lengths_to_padding_mask
from w2v.models.quantizers import GumbelVectorQuantizer, KmeansVectorQuantizer, LinearTemperature, QuantizerOutput
from w2v.models.wav2vec import (
    Wav2VecConfig,
    Wav2VecContextNetwork,
    Wav2VecFeatureExtractor,
    wav2vec_tiny_config,
)
from w2v.utils import check_config_fields


@dataclass
class VqWav2VecConfig:
    kind: ClassVar[str] = "vq_wav2vec"

    wav2vec: Wav2VecConfig = field(default_factory=Wav2VecConfig)
    quantizer: str = "gumbel"  # "gumbel" | "kmeans"
    num_groups: int = 2
    num_vars: int = 320
    gumbel_hidden_dim: int | None = None  # MLP for the Gumbel logits (None: one linear layer)
    temperature_start: float = 2.0
    temperature_end: float = 0.5
    temperature_anneal_updates: int = 280_000  # 70 % of fairseq's 400k updates
    kmeans_gamma: float = 0.25
    # Per-frame layer norm of z before code selection. The non-negative, log-compressed z share one
    # dominant direction, so fewer codewords get used (tiny model, 3 utterances, code perplexity at
    # initialisation: k-means 2.1-7.2 without, 4.9-14.7 with; Gumbel 9-11 vs 10-17). fairseq's
    # k-means quantizer normalises a projection of z for the same reason.
    quantizer_input_norm: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.wav2vec, dict):
            check_config_fields(Wav2VecConfig, self.wav2vec)
            self.wav2vec = Wav2VecConfig(**self.wav2vec)
        if self.quantizer not in ("gumbel", "kmeans"):
            raise ValueError(f"quantizer must be 'gumbel' or 'kmeans', got {self.quantizer!r}")


class VqWav2VecModel(nn.Module):
    def __init__(self, config: VqWav2VecConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = Wav2VecFeatureExtractor(config.wav2vec)
        dim = self.feature_extractor.out_channels
        if config.quantizer == "gumbel":
            schedule = LinearTemperature(config.temperature_start, config.temperature_end, config.temperature_anneal_updates)
            self.vector_quantizer = GumbelVectorQuantizer(
                dim, config.num_groups, config.num_vars, dim, schedule, config.gumbel_hidden_dim
            )
        else:
            self.vector_quantizer = KmeansVectorQuantizer(dim, config.num_groups, config.num_vars, config.kmeans_gamma)
        self.quantizer_input_norm = nn.LayerNorm(dim) if config.quantizer_input_norm else nn.Identity()
        self.feature_aggregator = Wav2VecContextNetwork(config.wav2vec, dim)

    def set_num_updates(self, num_updates: int) -> None:
        self.vector_quantizer.set_num_updates(num_updates)

    def quantize(self, z: Tensor, frame_lengths: Tensor | None = None) -> tuple[Tensor, Tensor, QuantizerOutput]:
        """z ``[batch, C, frames]`` -> (ẑ ``[batch, C, frames]``, codes ``[batch, frames, G]``, full output)."""
        valid = None if frame_lengths is None else ~lengths_to_padding_mask(frame_lengths.to(z.device), z.shape[-1])
        out = self.vector_quantizer(self.quantizer_input_norm(z.transpose(1, 2)), valid)
        return out.quantized.transpose(1, 2), out.codes, out

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None):
        """Returns ``(z, ẑ, c, quantizer_output, frame_lengths)``, channel-first features."""
        if lengths is None:
            z, frame_lengths = self.feature_extractor(waveforms), None
        else:
            z, frame_lengths = self.feature_extractor(waveforms, lengths)
        zq, _, qout = self.quantize(z, frame_lengths)
        c = self.feature_aggregator(zq, frame_lengths)
        return z, zq, c, qout, frame_lengths

    def extract_features(self, waveforms: Tensor, lengths: Tensor | None = None, num_layers: int | None = None):
        """``(outputs, frame_lengths)``: each context layer's output ``[batch, frames, C]`` (last = c)."""
        if lengths is None:
            z, frame_lengths = self.feature_extractor(waveforms), None
        else:
            z, frame_lengths = self.feature_extractor(waveforms, lengths)
        zq, _, _ = self.quantize(z, frame_lengths)
        layers = self.feature_aggregator.forward_layers(zq, frame_lengths)
        if num_layers is not None:
            layers = layers[:num_layers]
        return [t.transpose(1, 2) for t in layers], frame_lengths


def vq_wav2vec_model(config: VqWav2VecConfig) -> VqWav2VecModel:
    """The one builder from a (resolved) config."""
    return VqWav2VecModel(config)


def vq_wav2vec_base(quantizer: str = "gumbel", **overrides) -> VqWav2VecModel:
    """vq-wav2vec: wav2vec base encoder/context, G = 2, V = 320."""
    return VqWav2VecModel(VqWav2VecConfig(quantizer=quantizer, **overrides))


def vq_wav2vec_tiny(quantizer: str = "gumbel", **overrides) -> VqWav2VecModel:
    """32 channels, 3 context layers, G = 2 x V = 16 codewords: for tests and CPU smoke runs."""
    args = dict(wav2vec=wav2vec_tiny_config(), num_groups=2, num_vars=16, temperature_anneal_updates=1000)
    args.update(overrides)
    return VqWav2VecModel(VqWav2VecConfig(quantizer=quantizer, **args))


def _build_from_dict(values: Mapping[str, Any]) -> tuple[VqWav2VecModel, VqWav2VecConfig]:
    check_config_fields(VqWav2VecConfig, values)
    config = VqWav2VecConfig(**dict(values))
    return VqWav2VecModel(config), config


register_builder(VqWav2VecConfig.kind, _build_from_dict)
