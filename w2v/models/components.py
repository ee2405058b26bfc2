"""Building blocks of the wav2vec 2.0-family encoders.

Reused from torchaudio where they fit unchanged (``FeatureProjection``, the weight-normed
``ConvolutionalPositionalEmbedding``, ``WavLMSelfAttention``, ``GradMultiply``); written here
where torchaudio lacks something we need or is measurably slower (bench/bench_wav2vec2.py):

- :class:`ConvBlock`: group norm that only pools over the valid frames of each utterance, so a
  padded batch gives the per-utterance result (torchaudio/fairseq/HF pool over the padding too);
  an inference path that runs each convolution as one GEMM over overlapping channels-last windows.
- :class:`FeatureEncoder`: input checks, per-utterance waveform normalisation, ``feature_grad_mult``.
- :class:`StackedConvPositionalEmbedding`: data2vec's positional convolutions.
- :class:`SelfAttention` / :class:`FeedForward`: torchaudio's, plus an fp32 inference path through
  oneDNN's matmul (MKL's fp32 GEMM runs at half its speed on the AMD CPUs measured).
- :class:`EncoderLayer` / :class:`Transformer`: also return each block's FFN output (data2vec
  targets), take a boolean padding mask, and implement layerdrop.

The inference path is taken when autograd is off (``torch.no_grad`` / ``inference_mode``) or
nothing requires grad. Training in fp32 on CPU runs the Transformer's linears through oneDNN too
(:func:`linear`, forward and backward); elsewhere the standard kernels. All give the same values
(tested).
Parameter names follow torchaudio's ``Wav2Vec2Model``, so its state dict loads unchanged.
Frames are 20 ms (stride 320 samples at 16 kHz) for the standard feature encoder.
"""

from __future__ import annotations

import math
import weakref
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchaudio.models.wav2vec2 import components as ta

from w2v.models.config import Data2VecAudioConfig, EncoderConfig, WavLMConfig


def conv_output_lengths(lengths: Tensor, kernel_size: int, stride: int) -> Tensor:
    """Valid output frames of a 'valid' convolution: ``floor((n - k) / s) + 1``, at least 0."""
    return torch.clamp(torch.div(lengths - kernel_size, stride, rounding_mode="floor") + 1, min=0)


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[B] -> [B, max_len]`` boolean mask, True at padded steps."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


USE_FAST_INFERENCE = True
"""Switch for the inference kernels below; False runs torchaudio's kernels everywhere (the bench's
ablation row)."""


def inference_path(*tensors: Tensor) -> bool:
    """True when no autograd graph is needed: the fast kernels below have no backward."""
    return USE_FAST_INFERENCE and (not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors))


def _probe_onednn_linear() -> bool:
    try:
        x = torch.ones(2, 3)
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ones(4, 3), None, "none", [], "")
        return bool(torch.allclose(y, torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_LINEAR = _probe_onednn_linear()


_LOW_PRECISION_WEIGHTS: dict[int, tuple[weakref.ref, int, torch.dtype, Tensor]] = {}


def _autocast_weight(weight: Tensor) -> Tensor:
    """The autocast-dtype copy of a parameter, kept across calls (autocast re-casts every weight on
    every forward: ~10% of a bf16 BASE forward). Refreshed when the parameter changes in place,
    dropped when the parameter is freed."""
    dtype = torch.get_autocast_dtype("cpu")
    if not isinstance(weight, nn.Parameter) or weight.is_inference():
        return weight.to(dtype)
    key = id(weight)
    cached = _LOW_PRECISION_WEIGHTS.get(key)
    if cached is None or cached[0]() is not weight or cached[1] != weight._version or cached[2] != dtype:
        ref = weakref.ref(weight, lambda _, key=key: _LOW_PRECISION_WEIGHTS.pop(key, None))
        cached = (ref, weight._version, dtype, weight.detach().to(dtype))
        _LOW_PRECISION_WEIGHTS[key] = cached
    return cached[3]


def fast_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor:
    """``F.linear`` (+ GELU) for inference only (no backward).

    fp32 on CPU goes to oneDNN's matmul instead of MKL's GEMM: twice as fast on the AMD CPUs
    measured (bench/bench_wav2vec2.py). Under CPU autocast the weights' low-precision copies are
    cached instead of re-cast on every call.
    """
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        w = _autocast_weight(weight)
        b = None if bias is None else _autocast_weight(bias)
        with torch.autocast("cpu", enabled=False):
            y = F.linear(x.to(dtype), w, b)
            return torch.ops.aten.gelu_(y) if gelu else y
    if _ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32:
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def _onednn_mm(a: Tensor, b_t: Tensor) -> Tensor:
    """``a [N, K] @ b_t.T`` (``b_t [M, K]``) through oneDNN's fp32 matmul."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` whose forward and both backward GEMMs run on oneDNN (CPU, fp32): 2-2.5x faster
    than the MKL GEMMs behind ``addmm``/``mm`` at one thread on the AMD CPUs measured, which made up
    more than half of a BASE pretraining step (bench/bench_wav2vec2.py --what pretrain)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).contiguous()  # [N, out]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm(g, weight.t().contiguous()).view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_mm(g.t().contiguous(), x.reshape(-1, x.shape[-1]).t().contiguous())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)`` on the fastest kernel for the situation: :func:`fast_linear` without autograd,
    :class:`_OneDNNLinear` for fp32 CPU training, ``F.linear`` otherwise (GPU, autocast, float64)."""
    weight, bias = layer.weight, layer.bias
    if inference_path(x, weight):
        return fast_linear(x, weight, bias)
    if (
        USE_FAST_INFERENCE
        and _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.numel() > 0
    ):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class ConvBlock(nn.Module):
    """One feature-encoder block: Conv1d → (group norm | layer norm | nothing) → GELU.

    Args:
        in_channels, out_channels, kernel_size, stride, bias: of the convolution.
        norm: ``"group"`` (one group per channel: normalise each channel over time),
            ``"layer"`` (normalise each frame over channels) or ``None``.
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
            x: ``[batch, in_channels, samples_or_frames]``.
            lengths: valid steps per utterance ``[batch]``, or None (all valid).
        Returns:
            ``[batch, out_channels, frames]`` and the valid frames ``[batch]`` (or None).
        """
        x = self.conv(x)
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel_size, self.stride)
        if self.norm == "group":
            assert self.layer_norm is not None
            if lengths is None or bool((lengths == x.shape[-1]).all()):
                x = self.layer_norm(x)
            else:
                x = self._masked_group_norm(x, lengths)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x), lengths

    def forward_channels_last(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Inference path: the convolution as one GEMM over overlapping windows of a channels-last input.

        Args:
            x: ``[batch, steps, in_channels]``.
            lengths: ``[batch]`` or None.
        Returns:
            ``[batch, frames, out_channels]`` and valid frames ``[batch]`` (or None).
        """
        batch, steps, channels = x.shape
        frames = (steps - self.kernel_size) // self.stride + 1
        if torch.is_autocast_enabled("cpu"):  # cast once, before the windows repeat each step k/s times
            x = x.to(torch.get_autocast_dtype("cpu"))
        x = x.contiguous()
        # window t is the contiguous run x[t*stride : t*stride + kernel] of kernel*channels values
        windows = x.as_strided(
            (batch, frames, self.kernel_size * channels), (steps * channels, self.stride * channels, 1)
        )
        weight = self.conv.weight
        if torch.is_autocast_enabled("cpu"):
            weight = _autocast_weight(weight)
        weight = weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel_size, self.stride)
        if self.norm is None:  # GELU fused into the GEMM
            return fast_linear(windows, weight, self.conv.bias, gelu=True), lengths
        x = fast_linear(windows, weight, self.conv.bias)
        return self._normalize_gelu_(x, lengths), lengths

    _CHUNK = 1024
    """Frames per chunk of the in-place norm + GELU: the layer-0 activations (16M values per 10 s)
    stay in cache per chunk, and no full-size temporary is allocated (each costs more in page
    faults than the arithmetic; measured 5 ms vs 107 ms for the sum of squares)."""

    def _normalize_gelu_(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """Norm + GELU of a channels-last ``[batch, frames, channels]``, in place, chunk by chunk.

        Arithmetic in fp32 (as autocast runs norms), written back in ``x``'s dtype. The group norm
        (one group per channel) pools each channel over the valid frames of its utterance.
        """
        batch, frames, channels = x.shape
        norm = self.layer_norm
        assert norm is not None
        scale = shift = None
        if self.norm == "group":
            assert isinstance(norm, nn.GroupNorm)
            valid = None if lengths is None else (~lengths_to_padding_mask(lengths, frames))[:, :, None].float()
            # sums of (x - pivot), pivot ~ the mean, so a large DC offset does not cancel digits
            head = x[:, : self._CHUNK].float()
            if valid is None:
                pivot = head.mean(1, keepdim=True)
            else:
                head_valid = valid[:, : self._CHUNK]
                pivot = (head * head_valid).sum(1, keepdim=True) / head_valid.sum(1, keepdim=True).clamp(min=1)
            total = torch.zeros_like(pivot)
            squares = torch.zeros_like(pivot)
            for start in range(0, frames, self._CHUNK):
                chunk = x[:, start : start + self._CHUNK].float() - pivot
                if valid is not None:
                    chunk = chunk * valid[:, start : start + self._CHUNK]
                total += chunk.sum(1, keepdim=True)
                squares += (chunk * chunk).sum(1, keepdim=True)
            count = torch.full_like(total, frames) if lengths is None else lengths.clamp(min=1)[:, None, None]
            offset = total / count
            var = (squares / count - offset * offset).clamp(min=0.0)
            scale = torch.rsqrt(var + norm.eps) * norm.weight
            shift = norm.bias - (pivot + offset) * scale
        for start in range(0, frames, self._CHUNK):
            chunk = x[:, start : start + self._CHUNK]
            if scale is not None and shift is not None:
                y = torch.addcmul(shift, chunk.float(), scale)
            else:
                y = F.layer_norm(chunk.float(), (channels,), norm.weight, norm.bias, norm.eps)
            chunk.copy_(F.gelu(y))
        return x

    def _masked_group_norm(self, x: Tensor, lengths: Tensor) -> Tensor:
        # Statistics over valid frames only; in fp32 like F.group_norm under autocast.
        gn = self.layer_norm
        assert isinstance(gn, nn.GroupNorm)
        x = x.float()
        valid = (~lengths_to_padding_mask(lengths, x.shape[-1]))[:, None, :].to(x.dtype)
        count = lengths.clamp(min=1)[:, None, None].to(x.dtype)
        mean = (x * valid).sum(-1, keepdim=True) / count
        var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        x = (x - mean) * torch.rsqrt(var + gn.eps)
        return x * gn.weight[None, :, None] + gn.bias[None, :, None]


class FeatureEncoder(nn.Module):
    """Waveform → conv features: the CNN ``f: X → Z`` of wav2vec 2.0.

    Raises ``ValueError`` on input that cannot give a frame: not 2-D, not floating point, lengths of
    the wrong shape, or an utterance shorter than the receptive field (400 samples for the
    standard encoder; zero-length utterances included).
    """

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
        return x.transpose(1, 2), lengths

    def _convs(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``[batch, samples] -> [batch, channels, frames]`` (a transposed channels-last view on the
        inference path)."""
        if inference_path(x, *self.parameters()):
            x = x.unsqueeze(2)
            for block in self.conv_layers:
                x, lengths = block.forward_channels_last(x, lengths)
            return x.transpose(1, 2), lengths
        x = x.unsqueeze(1)
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        return x, lengths


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
    """Multi-head self-attention (torchaudio's parameter names), with a oneDNN fp32 inference path.

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
        q, k, v = (linear(x, p) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))
        if q.dtype == torch.bfloat16 and frames <= 2048 and inference_path(q):
            # bf16 on CPU: two batched GEMMs + softmax beat the flash kernel ~1.4x up to a few
            # thousand frames (measured at 500); scores [B, H, F, F] stay small there.
            scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-1, -2))
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            y = torch.matmul(scores.softmax(-1), v)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
            )
        y = y.transpose(1, 2).reshape(batch, frames, self.embed_dim)
        return linear(y, self.out_proj), None


class FeedForward(nn.Module):
    """Linear → GELU → dropout → Linear → dropout (torchaudio's parameter names); the first linear and
    the GELU are one oneDNN call on the fp32 inference path."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, frames, embed_dim] -> [batch, frames, embed_dim]``."""
        if inference_path(x, self.intermediate_dense.weight):
            h = fast_linear(x, self.intermediate_dense.weight, self.intermediate_dense.bias, gelu=True)
            h = fast_linear(self.intermediate_dropout(h), self.output_dense.weight, self.output_dense.bias)
            return self.output_dropout(h)
        h = self.intermediate_dropout(F.gelu(linear(x, self.intermediate_dense)))
        return self.output_dropout(linear(h, self.output_dense))


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
