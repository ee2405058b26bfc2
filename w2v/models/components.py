"""Building blocks of the wav2vec 2.0-family encoders.

Reused from torchaudio where they fit unchanged (``FeatureProjection``, the weight-normed
``ConvolutionalPositionalEmbedding``, ``WavLMSelfAttention``, ``GradMultiply``); written here
where torchaudio lacks something we need:

- :class:`ConvBlock`: group norm that only pools over the valid frames of each utterance, so a
  padded batch gives the per-utterance result (torchaudio/fairseq/HF pool over the padding too);
  the convolution is one matrix product over overlapping channels-last windows.
- :class:`FeatureEncoder`: input checks, per-utterance waveform normalisation, ``feature_grad_mult``;
  :class:`FbankEncoder`: stacked log-mel frames in its place (``feature_encoder="fbank"``).
- :class:`StackedConvPositionalEmbedding`: data2vec's positional convolutions.
- :class:`SelfAttention` / :class:`FeedForward`: torchaudio's parameter names and arithmetic.
- :class:`EncoderLayer` / :class:`Transformer`: also return each block's FFN output (data2vec
  targets), take a boolean padding mask, and implement layerdrop.

Every module has one forward path, for training and inference alike; each matrix product goes
through :func:`w2v.models.kernels.linear`, the one place that picks a CPU kernel.
Parameter names follow torchaudio's ``Wav2Vec2Model``, so its state dict loads unchanged.
Frames are 20 ms (stride 320 samples at 16 kHz) for the standard feature encoder.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchaudio.functional import melscale_fbanks
from torchaudio.models.wav2vec2 import components as ta

from w2v.models.config import (
    FBANK_SHIFT,
    FBANK_WINDOW,
    Data2VecAudioConfig,
    EncoderConfig,
    WavLMConfig,
    check_fbank_layers,
)
from w2v.models.kernels import linear
from w2v.models.padding import lengths_to_padding_mask


def conv_output_lengths(lengths: Tensor, kernel_size: int, stride: int) -> Tensor:
    """Valid output frames of a 'valid' convolution: ``floor((n - k) / s) + 1``, at least 0."""
    return torch.clamp(torch.div(lengths - kernel_size, stride, rounding_mode="floor") + 1, min=0)


class ConvBlock(nn.Module):
    """One feature-encoder block: Conv1d → (group norm | layer norm | nothing) → GELU, channels-last.

    The convolution is one matrix product over overlapping windows of the input (window ``t`` is
    steps ``[t * stride, t * stride + kernel)`` of every channel, a view of the input, nothing
    copied), through :func:`~w2v.models.kernels.linear`; GELU is fused into it when there is no norm.

    Args:
        in_channels, out_channels, kernel_size, stride, bias: of the convolution.
        norm: ``"group"`` (one group per channel: normalise each channel over the valid frames of
            its utterance), ``"layer"`` (normalise each frame over channels) or ``None``.
        eps: normaliser epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool,
        norm: Literal["group", "layer"] | None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.norm = norm
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.layer_norm: nn.Module | None
        if norm == "group":
            self.layer_norm = nn.GroupNorm(out_channels, out_channels, eps=eps, affine=True)
        elif norm == "layer":
            self.layer_norm = ta.LayerNorm(out_channels, eps=eps, elementwise_affine=True)
        else:
            self.layer_norm = None

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            x: ``[batch, steps, in_channels]`` (samples, or the previous block's frames).
            lengths: valid steps per utterance ``[batch]``, or None (all valid).
        Returns:
            ``[batch, frames, out_channels]`` with ``frames = (steps - kernel) // stride + 1``, and
            the valid frames ``[batch]`` (or None).
        """
        # [B, frames, C, k] -> [B, frames, k, C]: the last two dims are one contiguous run of k*C values
        windows = x.contiguous().unfold(1, self.kernel_size, self.stride).transpose(2, 3).flatten(2)
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)  # [out, k*C]
        x = linear(windows, weight, self.conv.bias, gelu=self.norm is None)
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel_size, self.stride)
        if self.norm is not None:
            x = self._norm_gelu(x, lengths)
        return x, lengths

    _CHUNK = 1024
    """Frames per chunk of the norm + GELU: a chunk's fp32 temporaries stay in cache, where
    full-size ones (16M values per 10 s at layer 0) would cost more in page faults than the
    arithmetic."""

    def _norm_gelu(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """GELU(norm(x)) of a channels-last ``[batch, frames, channels]``, chunk by chunk.

        Arithmetic in fp32 (as autocast runs norms), the result in ``x``'s dtype.
        """
        norm = self.layer_norm
        assert norm is not None
        chunks = x.split(self._CHUNK, dim=1)
        scale = shift = None
        if self.norm == "group":
            scale, shift = self._group_norm_affine(chunks, lengths)
        out = []
        for chunk in chunks:
            if scale is not None and shift is not None:
                y = torch.addcmul(shift, chunk.float(), scale)
            else:
                y = F.layer_norm(chunk.float(), chunk.shape[-1:], norm.weight, norm.bias, norm.eps)
            out.append(F.gelu(y).to(x.dtype))
        return torch.cat(out, dim=1)

    def _group_norm_affine(self, chunks: tuple[Tensor, ...], lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """The group norm as ``x * scale + shift``, both ``[batch, 1, channels]`` in fp32, from
        each utterance's valid frames only (``chunks``: the frames of ``[batch, frames, channels]``)."""
        norm = self.layer_norm
        assert isinstance(norm, nn.GroupNorm)
        frames = sum(c.shape[1] for c in chunks)
        valid = None if lengths is None else (~lengths_to_padding_mask(lengths, frames))[:, :, None].float()
        # Sums of (x - pivot) with the pivot near the mean, so a large DC offset does not cancel
        # digits; the pivot is a constant (detached): mean and variance do not depend on it.
        head = chunks[0].detach().float()
        if valid is None:
            pivot = head.mean(1, keepdim=True)
        else:
            head_valid = valid[:, : head.shape[1]]
            pivot = (head * head_valid).sum(1, keepdim=True) / head_valid.sum(1, keepdim=True).clamp(min=1)
        total = squares = torch.zeros_like(pivot)
        start = 0
        for chunk in chunks:
            centred = chunk.float() - pivot
            if valid is not None:
                centred = centred * valid[:, start : start + chunk.shape[1]]
            total = total + centred.sum(1, keepdim=True)
            squares = squares + (centred * centred).sum(1, keepdim=True)
            start += chunk.shape[1]
        count = torch.full_like(total, frames) if lengths is None else lengths.clamp(min=1)[:, None, None].float()
        offset = total / count
        var = (squares / count - offset * offset).clamp(min=0.0)
        scale = torch.rsqrt(var + norm.eps) * norm.weight
        return scale, norm.bias - (pivot + offset) * scale


class _WaveformInput(nn.Module):
    """Input checks and per-utterance normalisation shared by the feature encoders.

    Raises ``ValueError`` on input that cannot give a frame: not 2-D, not floating point, lengths of
    the wrong shape, or an utterance shorter than the receptive field (400 samples for the
    standard encoder; zero-length utterances included).
    """

    receptive_field: int

    def check_input(self, waveforms: Tensor, lengths: Tensor | None) -> None:
        """Raise ``ValueError`` naming expected vs found shape / dtype / length."""
        if waveforms.ndim != 2:
            raise ValueError(f"Expected 2D (batch, time) audio. Found: {list(waveforms.shape)}")
        if not waveforms.is_floating_point():
            raise ValueError(f"Expected floating-point audio (batch, time). Found dtype {waveforms.dtype}")
        batch, time = waveforms.shape
        if lengths is None:
            if time < self.receptive_field:
                raise ValueError(
                    f"Audio of {time} samples is shorter than the receptive field "
                    f"({self.receptive_field} samples); expected at least {self.receptive_field}"
                )
            return
        if lengths.ndim != 1 or lengths.shape[0] != batch:
            raise ValueError(f"Expected lengths of shape [{batch}]. Found: {list(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(f"Expected integer lengths. Found dtype {lengths.dtype}")
        if batch == 0:
            return
        longest, shortest = int(lengths.max()), int(lengths.min())
        if longest > time:
            raise ValueError(f"lengths exceed the audio: max length {longest} > {time} samples")
        if shortest < self.receptive_field:
            raise ValueError(
                f"An utterance of {shortest} samples is shorter than the receptive field "
                f"({self.receptive_field} samples); expected every length >= {self.receptive_field}"
            )

    @staticmethod
    def normalize(waveforms: Tensor, lengths: Tensor | None, eps: float = 1e-5) -> Tensor:
        """Zero mean, unit variance per utterance over its valid samples; padding set to 0.

        Args:
            waveforms: ``[batch, samples]``.
            lengths: ``[batch]`` or None.
        """
        x = waveforms.float()
        if lengths is None:
            return F.layer_norm(x, x.shape[-1:], eps=eps)
        valid = (~lengths_to_padding_mask(lengths, x.shape[-1])).to(x.dtype)
        count = lengths.clamp(min=1)[:, None].to(x.dtype)
        mean = (x * valid).sum(-1, keepdim=True) / count
        var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        return (x - mean) * torch.rsqrt(var + eps) * valid


class FeatureEncoder(_WaveformInput):
    """Waveform → conv features: the CNN ``f: X → Z`` of wav2vec 2.0."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        for i, (out_channels, kernel, stride) in enumerate(config.conv_layers):
            if config.conv_norm == "layer_norm":
                norm: Literal["group", "layer"] | None = "layer"
            else:
                norm = "group" if i == 0 else None
            blocks.append(ConvBlock(in_channels, out_channels, kernel, stride, config.conv_bias, norm))
            in_channels = out_channels
        self.conv_layers = nn.ModuleList(blocks)
        self.receptive_field = config.receptive_field
        self.normalize_waveform = config.normalize_waveform
        self.grad_mult = config.feature_grad_mult

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            waveforms: ``[batch, samples]`` float, 16 kHz.
            lengths: valid samples per utterance ``[batch]`` (int), or None when none is padded.
        Returns:
            conv features ``[batch, frames, channels]`` and valid frames ``[batch]`` (or None).
        """
        self.check_input(waveforms, lengths)
        if self.normalize_waveform:
            waveforms = self.normalize(waveforms, lengths)
        if self.grad_mult == 0.0:
            with torch.no_grad():
                x, lengths = self._convs(waveforms, lengths)
        else:
            x, lengths = self._convs(waveforms, lengths)
            if self.grad_mult != 1.0 and x.requires_grad:
                x = ta.GradMultiply.apply(x, self.grad_mult)
        return x, lengths

    def _convs(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``[batch, samples] -> [batch, frames, channels]``."""
        x = x.unsqueeze(2)
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        return x, lengths


_FBANK_FFT = 512


class FbankEncoder(_WaveformInput):
    """Waveform → log-mel frames, ``stack`` of them concatenated per 20-ms frame: the feature encoder
    of ``feature_encoder="fbank"``. No parameters; the frames are those of a conv layer with the
    config's (kernel, stride), so lengths and windows follow the conv formula.

    Log power of a 512-point FFT over 25-ms Hann windows every 10 ms, HTK mel filters 20 Hz-8 kHz.
    No mean or variance normalisation here: the projection's layer norm scales each frame.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        num_mel_bins, self.stack = check_fbank_layers(config.conv_layers)
        _, self.kernel, self.stride = config.conv_layers[0]
        self.receptive_field = config.receptive_field
        self.normalize_waveform = config.normalize_waveform
        self.register_buffer("window", torch.hann_window(FBANK_WINDOW), persistent=False)
        mel = melscale_fbanks(_FBANK_FFT // 2 + 1, 20.0, 8000.0, num_mel_bins, 16000, mel_scale="htk")
        self.register_buffer("mel", mel, persistent=False)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``[batch, samples]`` → ``[batch, frames, stack × mel bins]`` and valid frames (or None)."""
        self.check_input(waveforms, lengths)
        with torch.autocast(waveforms.device.type, enabled=False):
            x = self.normalize(waveforms, lengths) if self.normalize_waveform else waveforms.float()
            windows = x.unfold(1, FBANK_WINDOW, FBANK_SHIFT) * self.window  # [B, windows, 400]
            power = torch.fft.rfft(windows, _FBANK_FFT).abs().square()
            logmel = torch.log(power @ self.mel + 1e-6)  # [B, windows, bins]
        frames = logmel.shape[1] // self.stack
        x = logmel[:, : frames * self.stack].reshape(logmel.shape[0], frames, self.stack * self.mel.shape[1])
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel, self.stride)
        return x, lengths


def feature_encoder(config: EncoderConfig) -> nn.Module:
    """The config's feature encoder: :class:`FeatureEncoder` or :class:`FbankEncoder`."""
    return FbankEncoder(config) if config.feature_encoder == "fbank" else FeatureEncoder(config)


class StackedConvPositionalEmbedding(nn.Module):
    """data2vec's positional embedding: ``depth`` × (grouped conv → layer norm (no affine) → GELU).

    Padded frames are re-zeroed between the convolutions, so a padded batch equals per-utterance
    results (fairseq/HF let the first conv's output leak into the padding).
    """

    def __init__(self, embed_dim: int, kernel_size: int, groups: int, depth: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.kernel_size = kernel_size
        self.layers = nn.ModuleList(
            _PosConvLayer(embed_dim, kernel_size, groups) for _ in range(depth)
        )

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """
        Args:
            x: ``[batch, frames, embed_dim]`` (padded frames already zero).
            padding_mask: ``[batch, frames]`` True at padding, or None.
        Returns:
            ``[batch, frames, embed_dim]``.
        """
        h = x.transpose(1, 2)
        for layer in self.layers:
            h = layer(h)
            if padding_mask is not None:
                h = h.masked_fill(padding_mask[:, None, :], 0.0)
        return h.transpose(1, 2)


class _PosConvLayer(nn.Module):
    def __init__(self, embed_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, h: Tensor) -> Tensor:
        """``[batch, embed_dim, frames] -> [batch, embed_dim, frames]``."""
        h = self.conv(h)
        if self.trim:
            h = h[..., : -self.trim]
        h = F.layer_norm(h.transpose(1, 2), h.shape[1:2]).transpose(1, 2)
        return F.gelu(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention with torchaudio's parameter names.

    Args:
        embed_dim: model width D.
        num_heads: heads (D divisible by it).
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, None]:
        """
        Args:
            x: ``[batch, frames, embed_dim]``.
            attention_mask: ``[batch, 1, frames, frames]`` bool (True = may attend) or None.
        Returns:
            ``[batch, frames, embed_dim]`` and None (the slot where WavLM returns its position bias).
        """
        batch, frames, _ = x.shape
        heads = (batch, frames, self.num_heads, self.head_dim)
        # [batch, heads, frames, head_dim], contiguous: SDPA's CPU kernels run slower on the transposed view
        q, k, v = (
            linear(x, p.weight, p.bias).view(heads).transpose(1, 2).contiguous()
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(batch, frames, self.embed_dim)
        return linear(y, self.out_proj.weight, self.out_proj.bias), None


class FeedForward(nn.Module):
    """Linear → GELU → dropout → Linear → dropout (torchaudio's parameter names)."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, frames, embed_dim] -> [batch, frames, embed_dim]``."""
        h = linear(x, self.intermediate_dense.weight, self.intermediate_dense.bias, gelu=True)
        h = linear(self.intermediate_dropout(h), self.output_dense.weight, self.output_dense.bias)
        return self.output_dropout(h)


class EncoderLayer(nn.Module):
    """Transformer block (post-LN for BASE, pre-LN for LARGE-LV60k) that also returns its FFN output.

    Args:
        attention: :class:`SelfAttention` or torchaudio's ``WavLMSelfAttention``.
        feed_forward: :class:`FeedForward`.
        dropout: residual dropout after attention.
        layer_norm_first: pre-LN.
    """

    def __init__(
        self,
        attention: nn.Module,
        feed_forward: nn.Module,
        embed_dim: int,
        dropout: float,
        layer_norm_first: bool,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.attention = attention
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps)
        self.layer_norm_first = layer_norm_first
        self.feed_forward = feed_forward
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=eps)
        self.relative_bias = isinstance(attention, ta.WavLMSelfAttention)

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """
        Args:
            x: ``[batch, frames, embed_dim]``.
            padding_mask: ``[batch, frames]`` True at padding (WavLM attention uses it).
            attention_mask: ``[batch, 1, frames, frames]`` True where attention is allowed
                (plain attention uses it); None when nothing is padded.
            position_bias: WavLM's ``[batch, heads, frames, frames]`` bias from the first block.
        Returns:
            block output ``[batch, frames, embed_dim]``; FFN output before its residual and
            final layer norm ``[batch, frames, embed_dim]``; the position bias (WavLM) or None.
        """
        residual = x
        if self.layer_norm_first:
            x = self.layer_norm(x)
        if self.relative_bias:
            key_mask = None
            if padding_mask is not None:  # additive, in the dtype of the position bias it is added to
                bias = position_bias if position_bias is not None else self.attention.rel_attn_embed.weight
                bias_dtype = bias.dtype
                key_mask = torch.zeros(padding_mask.shape, dtype=bias_dtype, device=x.device)
                key_mask = key_mask.masked_fill(padding_mask, float("-inf"))
            x, position_bias = self.attention(x, key_padding_mask=key_mask, position_bias=position_bias)
        else:
            x, _ = self.attention(x, attention_mask=attention_mask)
        x = residual + self.dropout(x)
        if self.layer_norm_first:
            ffn = self.feed_forward(self.final_layer_norm(x))
            x = x + ffn
        else:
            x = self.layer_norm(x)
            ffn = self.feed_forward(x)
            x = self.final_layer_norm(x + ffn)
        return x, ffn, position_bias


class Transformer(nn.Module):
    """Positional embedding + Transformer blocks (context network ``g: Z → C``).

    Args:
        pos_conv_embed: ``ConvolutionalPositionalEmbedding`` or :class:`StackedConvPositionalEmbedding`.
        layers: :class:`EncoderLayer` blocks.
        layer_norm_first: pre-LN model: the final layer norm follows the last block (post-LN: it
            follows the positional embedding).
        layerdrop: probability of skipping a block in training.
    """

    def __init__(
        self,
        pos_conv_embed: nn.Module,
        layers: nn.ModuleList,
        embed_dim: int,
        dropout: float,
        layer_norm_first: bool,
        layerdrop: float,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.pos_conv_embed = pos_conv_embed
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps)
        self.layer_norm_first = layer_norm_first
        self.layerdrop = layerdrop
        self.dropout = nn.Dropout(dropout)
        self.layers = layers

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        num_layers: int | None = None,
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """
        Args:
            x: ``[batch, frames, embed_dim]``, padded frames zero.
            padding_mask: ``[batch, frames]`` True at padding, or None.
            num_layers: run only the first ``num_layers`` blocks.
        Returns:
            per-block outputs (each ``[batch, frames, embed_dim]``; blocks skipped by layerdrop are
            left out), per-block FFN outputs (same), and the final output ``[batch, frames,
            embed_dim]`` (last block, plus the final layer norm of a pre-LN model when every block ran).
        """
        total = len(self.layers)
        if num_layers is not None and not 0 < num_layers <= total:
            raise ValueError(f"num_layers must be in [1, {total}]. Found: {num_layers}")
        if isinstance(self.pos_conv_embed, StackedConvPositionalEmbedding):
            x = x + self.pos_conv_embed(x, padding_mask)
        else:
            x = x + self.pos_conv_embed(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)

        attention_mask = None
        if padding_mask is not None:
            b, t = padding_mask.shape
            attention_mask = (~padding_mask)[:, None, None, :].expand(b, 1, t, t)
        results: list[Tensor] = []
        ffn_results: list[Tensor] = []
        position_bias: Tensor | None = None
        for i, layer in enumerate(self.layers[: num_layers or total]):
            # WavLM's first block makes the position bias every later block needs: never drop it.
            droppable = not (i == 0 and layer.relative_bias)
            if self.training and droppable and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x, ffn, position_bias = layer(x, padding_mask, attention_mask, position_bias)
            results.append(x)
            ffn_results.append(ffn)
        final = x
        if self.layer_norm_first and num_layers in (None, total):
            final = self.layer_norm(x)
        return results, ffn_results, final


class Encoder(nn.Module):
    """Feature projection (layer norm + linear to D + dropout) followed by the :class:`Transformer`.

    A container, so parameter names match torchaudio's ``encoder.feature_projection`` /
    ``encoder.transformer``.
    """

    def __init__(self, feature_projection: ta.FeatureProjection, transformer: Transformer) -> None:
        super().__init__()
        self.feature_projection = feature_projection
        self.transformer = transformer


def build_encoder(config: EncoderConfig) -> Encoder:
    """The projection + context network of ``config``'s family."""
    in_features = config.conv_layers[-1][0]
    projection = ta.FeatureProjection(in_features, config.embed_dim, config.dropout_input)
    projection.layer_norm = (
        nn.LayerNorm(in_features, eps=config.layer_norm_eps) if config.feature_proj_layer_norm else nn.Identity()
    )
    pos_conv: nn.Module
    if isinstance(config, Data2VecAudioConfig):
        pos_conv = StackedConvPositionalEmbedding(
            config.embed_dim, config.pos_conv_kernel, config.pos_conv_groups, config.pos_conv_depth
        )
    else:
        pos_conv = ta.ConvolutionalPositionalEmbedding(config.embed_dim, config.pos_conv_kernel, config.pos_conv_groups)
    layers = nn.ModuleList()
    for i in range(config.num_layers):
        attention: nn.Module
        if isinstance(config, WavLMConfig):
            attention = ta.WavLMSelfAttention(
                embed_dim=config.embed_dim,
                num_heads=config.num_heads,
                dropout=config.attention_dropout,
                has_relative_attention_bias=(i == 0),
                num_buckets=config.num_buckets,
                max_distance=config.max_distance,
            )
        else:
            attention = SelfAttention(config.embed_dim, config.num_heads, config.attention_dropout)
        feed_forward = FeedForward(config.embed_dim, config.ffn_dim, config.activation_dropout, config.dropout)
        layers.append(
            EncoderLayer(
                attention, feed_forward, config.embed_dim, config.dropout, config.layer_norm_first,
                config.layer_norm_eps,
            )
        )
    transformer = Transformer(
        pos_conv, layers, config.embed_dim, config.dropout, config.layer_norm_first, config.layerdrop,
        config.layer_norm_eps,
    )
    return Encoder(projection, transformer)


def init_weights(module: nn.Module) -> None:
    """fairseq's initialisation: BERT-style N(0, 0.02) linears in the Transformer, Kaiming convs in
    the feature encoder, N(0, sqrt(4 / (k·D))) for the positional convolutions."""
    for name, sub in module.named_modules():
        if isinstance(sub, ConvBlock):
            nn.init.kaiming_normal_(sub.conv.weight)
            if sub.conv.bias is not None:
                nn.init.zeros_(sub.conv.bias)
        elif isinstance(sub, ta.ConvolutionalPositionalEmbedding):
            conv = sub.conv
            std = math.sqrt(4.0 / (conv.kernel_size[0] * sub.embed_dim))
            with torch.no_grad():
                v = torch.randn_like(conv.parametrizations.weight.original1) * std
                conv.parametrizations.weight.original1.copy_(v)
                conv.parametrizations.weight.original0.copy_(torch.norm_except_dim(v, 2, 2))
                conv.bias.zero_()
        elif isinstance(sub, _PosConvLayer):
            std = math.sqrt(4.0 / (sub.conv.kernel_size[0] * sub.conv.in_channels))
            nn.init.normal_(sub.conv.weight, 0.0, std)
            nn.init.zeros_(sub.conv.bias)
        elif isinstance(sub, nn.Linear) and name.startswith("encoder.transformer"):
            nn.init.normal_(sub.weight, 0.0, 0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, ta.WavLMSelfAttention):
            nn.init.normal_(sub.attention.in_proj_weight, 0.0, 0.02)
            nn.init.zeros_(sub.attention.in_proj_bias)
