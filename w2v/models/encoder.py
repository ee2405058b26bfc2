"""The wav2vec 2.0-family encoder: conv feature encoder → projection → (mask) → Transformer.

One class serves wav2vec 2.0, HuBERT, data2vec audio and WavLM; the config's type picks the
positional embedding and the attention. Two ways in:

- inference (torchaudio's semantics): ``extract_features(waveforms, lengths)`` → per-layer outputs;
  ``forward(waveforms, lengths)`` → final output.
- pre-training (``w2v.ssl``): ``feature_extractor(waveforms, lengths)`` → conv features, then
  ``encode(features, lengths, mask=..., return_ffn=...)`` → :class:`EncoderOutput`.

Shapes: ``B`` utterances, ``T`` samples at 16 kHz, ``F`` frames at 20 ms, ``C`` conv channels
(512), ``D`` Transformer width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from w2v.models.components import (
    Encoder,
    build_encoder,
    feature_encoder,
    init_weights,
)
from w2v.models.config import EncoderConfig
from w2v.models.kernels import linear
from w2v.models.padding import lengths_to_padding_mask


class EncoderOutput(NamedTuple):
    """What :meth:`SSLEncoder.encode` returns.

    Attributes:
        features: conv features after the feature layer norm, before the projection ``[B, F, C]``
            (the quantizer input of wav2vec 2.0).
        projected: projected features (+ input dropout), before masking ``[B, F, D]``.
        layer_results: each Transformer block's output ``[B, F, D]`` (blocks dropped by layerdrop
            are left out; no final layer norm, as in torchaudio).
        output: the encoder output ``[B, F, D]``: last block, with the final layer norm of a pre-LN
            model (what fairseq's contrastive / HuBERT heads read).
        lengths: valid frames ``[B]``, or None when nothing is padded.
        padding_mask: ``[B, F]`` True at padded frames, or None.
        ffn_results: with ``return_ffn=True``, each block's FFN output before its residual and
            final layer norm ``[B, F, D]`` (data2vec's targets); else None.
    """

    features: Tensor
    projected: Tensor
    layer_results: list[Tensor]
    output: Tensor
    lengths: Tensor | None
    padding_mask: Tensor | None
    ffn_results: list[Tensor] | None


class SSLEncoder(nn.Module):
    """wav2vec 2.0 / HuBERT / data2vec audio / WavLM encoder (no quantizer, no heads).

    Attributes:
        feature_extractor: :class:`~w2v.models.components.FeatureEncoder`,
            ``(waveforms [B, T], lengths [B] | None) -> (features [B, F, C], lengths [B] | None)``.
        encoder: projection + Transformer (parameter names as torchaudio's ``Wav2Vec2Model``).
        mask_embedding: the learned vector ``[D]`` that replaces masked frames.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = feature_encoder(config)
        self.encoder: Encoder = build_encoder(config)
        self.mask_embedding = nn.Parameter(torch.empty(config.embed_dim).uniform_())
        init_weights(self)

    @property
    def kind(self) -> str:
        return self.config.kind

    def encode(
        self,
        features: Tensor,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        num_layers: int | None = None,
        return_ffn: bool = False,
    ) -> EncoderOutput:
        """Run projection, masking and the Transformer on conv features.

        Args:
            features: conv features ``[B, F, C]`` from :attr:`feature_extractor`.
            lengths: valid frames ``[B]`` or None.
            mask: ``[B, F]`` bool, True where the projected frame is replaced by
                :attr:`mask_embedding` before the positional convolution.
            num_layers: stop after this many blocks (then ``output`` is the last computed block).
            return_ffn: also return each block's FFN output (``ffn_results``).
        Returns:
            :class:`EncoderOutput`.
        """
        if features.ndim != 3 or features.shape[-1] != self.config.conv_layers[-1][0]:
            raise ValueError(
                f"Expected conv features [batch, frames, {self.config.conv_layers[-1][0]}]. "
                f"Found: {list(features.shape)}"
            )
        batch, frames, _ = features.shape
        padding_mask = None
        if lengths is not None:
            if lengths.shape != (batch,):
                raise ValueError(f"Expected lengths of shape [{batch}]. Found: {list(lengths.shape)}")
            if batch and int(lengths.max()) > frames:
                raise ValueError(f"lengths exceed the features: max length {int(lengths.max())} > {frames} frames")
            if batch and bool((lengths < frames).any()):
                padding_mask = lengths_to_padding_mask(lengths, frames)
        projection = self.encoder.feature_projection
        features = projection.layer_norm(features)
        projected = projection.dropout(linear(features, projection.projection.weight, projection.projection.bias))
        x = projected
        if mask is not None:
            if mask.shape != (batch, frames) or mask.dtype != torch.bool:
                raise ValueError(
                    f"Expected a bool mask of shape [{batch}, {frames}]. Found: {list(mask.shape)} {mask.dtype}"
                )
            x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        results, ffn_results, output = self.encoder.transformer(x, padding_mask, num_layers)
        return EncoderOutput(
            features=features,
            projected=projected,
            layer_results=results,
            output=output,
            lengths=lengths,
            padding_mask=padding_mask,
            ffn_results=ffn_results if return_ffn else None,
        )

    def extract_features(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        num_layers: int | None = None,
    ) -> tuple[list[Tensor], Tensor | None]:
        """Per-layer outputs, as torchaudio's ``Wav2Vec2Model.extract_features``.

        Args:
            waveforms: ``[B, T]`` float audio at 16 kHz.
            lengths: valid samples ``[B]`` (int) or None.
            num_layers: stop after this many Transformer blocks.
        Returns:
            list of ``[B, F, D]`` (one per block, no final layer norm) and valid frames ``[B]`` or None.
            Frames at padded positions are not meaningful.
        Raises:
            ValueError: audio not ``[B, T]`` float, lengths not ``[B]`` integers, or an utterance
                shorter than the receptive field (400 samples; zero-length utterances included).
        """
        features, lengths = self.feature_extractor(waveforms, lengths)
        out = self.encode(features, lengths, num_layers=num_layers)
        return out.layer_results, out.lengths

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Final encoder output.

        Args:
            waveforms: ``[B, T]`` float audio at 16 kHz.
            lengths: valid samples ``[B]`` or None.
        Returns:
            ``[B, F, D]`` (final layer norm included for pre-LN models) and valid frames ``[B]`` or None.
        """
        features, lengths = self.feature_extractor(waveforms, lengths)
        return self.encode(features, lengths).output, lengths
