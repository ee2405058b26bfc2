"""CTC acoustic model on precomputed features: subsampling + conformer encoder + linear.

The contract (ARCHITECTURE.md): ``model(features [B, T, F], feature_lens [B]) ->
(log_probs [B, T', V], out_lens [B])`` with log-softmax over V tokens and blank = 0.

Frames: output at 40 ms whatever the input: ×4 for 10 ms fbank (two 3×3 Conv2d), ×2 for the
20 ms frames of the wav2vec family (one Conv1d), ×1 for 40 ms input (a linear map).
Every padding-sensitive operation is masked, so a padded batch gives the per-utterance results
(attention ignores padded keys; padded frames are zeroed before the depthwise convolution; layer
norm instead of batch norm inside the convolution module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from w2v.models.padding import lengths_to_padding_mask
from w2v.utils import check_config_fields

KIND = "ctc_conformer"
SUBSAMPLING_FACTORS = (1, 2, 4)
OUTPUT_FRAME_SHIFT = 0.04


@dataclass
class AsrConfig:
    """Hyper-parameters of :class:`CtcConformer`; stored in every checkpoint.

    Defaults: a 2.2M-parameter model (at V=200) meant for the synthetic ``mini`` LibriSpeech corpus
    on 2 CPU cores. Real corpora want :data:`MODEL_SIZES` ``medium`` (wenet's AISHELL encoder) or
    ``large`` (icefall's LibriSpeech conformer_ctc).
    """

    feature_dim: int = 80
    num_tokens: int = 500
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 4
    ffn_dim: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    # Input frames per output frame: 4 (10 ms fbank), 2 (20 ms SSL features) or 1.
    subsampling: int = 4
    subsampling_channels: int = 64
    # Per-utterance mean/variance normalisation of the input features over valid frames (CMVN).
    # Without it, raw log-mel magnitudes slow the escape from the all-blank CTC solution.
    normalize_input: bool = True
    # On-the-fly SSL front end (w2v/asr/frontend.py): None when the features are precomputed;
    # else the spec of w2v.asr.frontend.make_spec, and the input is audio [B, samples].
    ssl: Optional[dict] = None
    # "conformer": subsampling to 40 ms + conformer blocks; "linear": dropout and one linear map
    # from the features to the tokens at the input's frame rate (fairseq's and HF's wav2vec 2.0
    # fine-tuning head on the SSL encoder; a linear probe on precomputed features).
    head: str = "conformer"
    # Joint CTC/attention (wenet's U2): a Transformer decoder of this many layers over the encoder
    # output (d_model, num_heads, ffn_dim as the encoder's); 0: CTC only. <sos/eos> is its token id.
    num_decoder_layers: int = 0
    sos_eos: int = 1

    def __post_init__(self) -> None:
        if self.head not in ("conformer", "linear"):
            raise ValueError(f"head must be 'conformer' or 'linear', got {self.head!r}")
        if self.head == "linear" and self.num_decoder_layers:
            raise ValueError("an attention decoder needs the conformer head (a linear head has no encoder of its own)")
        if self.head == "linear" and self.subsampling != 1:
            raise ValueError(f"a linear head keeps the input's frame rate (subsampling 1), got {self.subsampling}")
        if self.subsampling not in SUBSAMPLING_FACTORS:
            raise ValueError(
                f"subsampling must be one of {SUBSAMPLING_FACTORS}, got {self.subsampling}"
            )
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (symmetric padding), got {self.conv_kernel}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AsrConfig":
        check_config_fields(cls, d)
        return cls(**dict(d))


# --model-size presets (encoder + CTC head; parameters at 500 BPE tokens / 4336 AISHELL characters):
MODEL_SIZES: dict[str, dict[str, Any]] = {
    # the defaults: 2.2M, for the synthetic corpora on 2 CPU cores
    "demo": {},
    # wenet's AISHELL-1 conformer encoder (U2: 256-d, 4 heads, 12 blocks, FFN 2048, kernel 15): 32.8M at
    # 500 tokens, 33.8M at 4336
    "medium": dict(d_model=256, num_heads=4, num_layers=12, ffn_dim=2048, conv_kernel=15,
                   subsampling_channels=256),
    # icefall's LibriSpeech conformer_ctc encoder (512-d, 8 heads, 12 blocks, FFN 2048, kernel 31): 80.3M
    "large": dict(d_model=512, num_heads=8, num_layers=12, ffn_dim=2048, conv_kernel=31,
                  subsampling_channels=512),
    # fairseq's / HF's fine-tuning set-up: the SSL encoder's frames → dropout → linear (V × dim)
    "linear": dict(head="linear", subsampling=1, dropout=0.1),
}


def model_config(size: str = "demo", **overrides: Any) -> AsrConfig:
    """The :data:`MODEL_SIZES` preset ``size`` with ``overrides`` on top."""
    if size not in MODEL_SIZES:
        raise ValueError(f"Unknown model size {size!r}; expected one of {sorted(MODEL_SIZES)}")
    return AsrConfig(**{**MODEL_SIZES[size], **overrides})


def subsampled_lengths(lengths: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Output lengths of the subsampling front-end (convolutions without padding).

    - ×4 (:class:`Conv2dSubsampling`): ``T' = max(((T - 1) // 2 - 1) // 2, 0)``; 100 → 24, 7 → 1, 6 → 0.
    - ×2 (:class:`Conv1dSubsampling`): ``T' = max((T - 1) // 2, 0)``; 100 → 49, 3 → 1, 2 → 0.
    - ×1: ``T' = T``.
    """
    if factor == 4:
        return (((lengths - 1) // 2 - 1) // 2).clamp(min=0)
    if factor == 2:
        return ((lengths - 1) // 2).clamp(min=0)
    if factor == 1:
        return lengths
    raise ValueError(f"subsampling must be one of {SUBSAMPLING_FACTORS}, got {factor}")


def subsampling_for(frame_shift: float) -> int:
    """The factor that takes input frames of ``frame_shift`` seconds to 40 ms output frames."""
    factor = round(OUTPUT_FRAME_SHIFT / frame_shift)
    if factor not in SUBSAMPLING_FACTORS or abs(factor * frame_shift - OUTPUT_FRAME_SHIFT) > 1e-6:
        raise ValueError(
            f"Features with a {frame_shift * 1000:g} ms frame shift cannot be subsampled to "
            f"{OUTPUT_FRAME_SHIFT * 1000:g} ms; supported input shifts: 10, 20 and 40 ms"
        )
    return factor


def input_subsampling(head: str, frame_shift: float) -> int:
    """Input frames per output frame: 1 for a linear head (it keeps the frame rate), else
    :func:`subsampling_for` (40 ms output frames)."""
    return 1 if head == "linear" else subsampling_for(frame_shift)


def utterance_cmvn(features: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per utterance and feature dim over the valid frames; padding → 0.

    features: ``[batch, frames, dim]``; lengths: ``[batch]``.
    """
    valid = (~lengths_to_padding_mask(lengths.to(torch.long), features.size(1))).unsqueeze(-1).to(features.dtype)
    n = valid.sum(1, keepdim=True).clamp(min=1.0)
    mean = (features * valid).sum(1, keepdim=True) / n
    var = ((features - mean) ** 2 * valid).sum(1, keepdim=True) / n
    return (features - mean) * torch.rsqrt(var + eps) * valid


class Conv2dSubsampling(nn.Module):
    """Two 3×3 stride-2 convolutions over (time, frequency), then a linear map to ``d_model``.

    Without padding, output frame t only sees input frames [4t, 4t + 6], so the valid outputs of a
    padded utterance never see its padding.
    """

    def __init__(self, feature_dim: int, d_model: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq = ((feature_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[batch, frames, feature_dim]`` → ``[batch, ((frames-1)//2-1)//2, d_model]``."""
        x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))


class Conv1dSubsampling(nn.Module):
    """One kernel-3 stride-2 convolution over time (all feature dims as channels), ReLU, linear.

    Output frame t sees input frames [2t, 2t + 2] only, so padding never reaches a valid output.
    """

    def __init__(self, feature_dim: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(feature_dim, d_model, kernel_size=3, stride=2)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[batch, frames, feature_dim]`` → ``[batch, (frames - 1) // 2, d_model]``."""
        return self.out(F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2))


class LinearInput(nn.Module):
    """No subsampling: a frame-wise linear map, ReLU, linear."""

    def __init__(self, feature_dim: int, d_model: int) -> None:
        super().__init__()
        self.inp = nn.Linear(feature_dim, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.inp(x)))


def make_subsampling(cfg: "AsrConfig") -> nn.Module:
    if cfg.subsampling == 4:
        return Conv2dSubsampling(cfg.feature_dim, cfg.d_model, cfg.subsampling_channels)
    if cfg.subsampling == 2:
        return Conv1dSubsampling(cfg.feature_dim, cfg.d_model)
    return LinearInput(cfg.feature_dim, cfg.d_model)


# Input frames the front-end needs for one output frame.
MIN_INPUT_FRAMES = {4: 7, 2: 3, 1: 1}


class SinusoidalPositionalEncoding(nn.Module):
    """Absolute sinusoidal positions added to a scaled input (Vaswani et al.)."""

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.d_model = d_model
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[batch, frames, d_model]``."""
        t = x.size(1)
        pos = torch.arange(t, device=x.device, dtype=torch.float32)[:, None]
        div = torch.exp(
            torch.arange(0, self.d_model, 2, device=x.device, dtype=torch.float32)
            * (-math.log(10000.0) / self.d_model)
        )
        pe = torch.zeros(t, self.d_model, device=x.device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return self.dropout(x * math.sqrt(self.d_model) + pe.to(x.dtype))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention that ignores padded keys."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = dropout
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x: ``[batch, frames, d_model]``; pad: ``[batch, frames]`` (True = padding)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.num_heads, d // self.num_heads).unbind(2)
        # [B, H, T, D/H]; the additive mask removes padded keys from every query's softmax.
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        # A zero-length utterance would mask every key (NaN softmax); let it attend to its padding.
        pad = pad & ~pad.all(dim=1, keepdim=True)
        mask = torch.zeros(b, 1, 1, t, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(pad[:, None, None, :], float("-inf"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise-GLU → depthwise conv → LayerNorm → SiLU → pointwise."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x: ``[batch, frames, d_model]``; pad: ``[batch, frames]`` (True = padding)."""
        y = F.glu(self.pointwise_in(self.norm(x)), dim=-1)
        # Zero the padding so the depthwise conv sees what an unpadded utterance's zero-padding gives.
        y = y.masked_fill(pad[..., None], 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        y = F.silu(self.depthwise_norm(y))
        return self.dropout(self.pointwise_out(y))


class ConformerBlock(nn.Module):
    """Macaron block: ½FFN → MHSA → Conv → ½FFN → LayerNorm (Gulati et al. 2020)."""

    def __init__(self, cfg: AsrConfig) -> None:
        super().__init__()
        self.ffn1 = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.attn = SelfAttention(cfg.d_model, cfg.num_heads, cfg.dropout)
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel, cfg.dropout)
        self.ffn2 = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attn(x, pad)
        x = x + self.conv(x, pad)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


class CtcConformer(nn.Module):
    """Features → subsampling (×4 / ×2 / ×1) → conformer blocks → linear → log-softmax over tokens;
    with ``head="linear"``: features → dropout → linear → log-softmax, at the features' frame rate."""

    def __init__(self, cfg: AsrConfig) -> None:
        super().__init__()
        self.config = cfg
        self.frontend = None
        self.spec_augment = None
        if cfg.ssl is not None:
            from w2v.asr.data import default_spec_augment
            from w2v.asr.frontend import SslFrontend

            self.frontend = SslFrontend(cfg.ssl)
            # Precomputed features are augmented by the dataset; on-the-fly ones here.
            self.spec_augment = default_spec_augment(cfg.ssl["frame_shift"], cfg.feature_dim)
        if cfg.head == "linear":
            self.subsampling, self.pos, self.blocks = nn.Identity(), nn.Dropout(cfg.dropout), nn.ModuleList()
            self.output = nn.Linear(cfg.feature_dim, cfg.num_tokens)
            return
        self.subsampling = make_subsampling(cfg)
        self.pos = SinusoidalPositionalEncoding(cfg.d_model, cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))
        self.output = nn.Linear(cfg.d_model, cfg.num_tokens)
        self.decoder = None
        if cfg.num_decoder_layers:
            from w2v.asr.decoder import AttentionDecoder

            self.decoder = AttentionDecoder(cfg.num_tokens, cfg.d_model, cfg.num_heads,
                                            cfg.num_decoder_layers, cfg.ffn_dim, cfg.dropout)

    def forward(self, features: torch.Tensor, feature_lens: torch.Tensor, targets=None):
        """
        Args:
            features: ``[batch, frames, feature_dim]`` at ``40 ms / subsampling`` frames, right-padded;
                with an SSL front end (``config.ssl``) audio ``[batch, samples]``.
            feature_lens: ``[batch]`` valid frames (samples) per utterance.
            targets: token ids per utterance; given to a model with a decoder, its loss is added.
        Returns:
            log_probs: ``[batch, T', num_tokens]`` at 40 ms frames, T' = subsampled max length.
            out_lens: ``[batch]`` valid output frames, :func:`subsampled_lengths` of feature_lens.
            With ``targets`` and a decoder also: the decoder's summed label-smoothed loss and the
            number of tokens it predicted (``label_smoothing`` as :attr:`label_smoothing`).
        """
        x, out_lens = self.encode(features, feature_lens)
        log_probs = F.log_softmax(self.output(x), dim=-1)
        if targets is None or self.decoder is None:
            return log_probs, out_lens
        from w2v.asr.decoder import decoder_io, label_smoothing_loss

        ys_in, ys_out, ys_lens = decoder_io(targets, self.config.sos_eos, x.device)
        loss, tokens = label_smoothing_loss(self.decoder(x, out_lens, ys_in, ys_lens), ys_out,
                                            self.label_smoothing)
        return log_probs, out_lens, loss, tokens

    label_smoothing = 0.1  # set by training (TrainConfig.label_smoothing)

    def encode(self, features: torch.Tensor, feature_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder output before the CTC layer: ``([batch, T', d_model], out_lens [batch])``."""
        if self.frontend is not None:
            if features.dim() != 2:
                raise ValueError(f"Expected audio [batch, samples]. Found: {list(features.shape)}")
            features, feature_lens = self.frontend(features, feature_lens)
            if self.training and self.spec_augment is not None:
                segments = torch.stack([torch.arange(len(feature_lens)), torch.zeros_like(feature_lens),
                                        feature_lens], dim=1).to(torch.int)
                features = self.spec_augment(features.clone(), supervision_segments=segments)
        if features.dim() != 3 or features.size(-1) != self.config.feature_dim:
            raise ValueError(
                f"Expected [batch, frames, {self.config.feature_dim}] features. "
                f"Found: {list(features.shape)}"
            )
        if feature_lens.shape != features.shape[:1]:
            raise ValueError(
                f"feature_lens must be [batch]={list(features.shape[:1])}. Found: {list(feature_lens.shape)}"
            )
        need = MIN_INPUT_FRAMES[self.config.subsampling]
        if features.size(1) < need:
            # The subsampling convs need `need` frames for one output frame; pad so that
            # too-short input yields zero-length outputs instead of a conv error.
            features = F.pad(features, (0, 0, 0, need - features.size(1)))
        if self.config.normalize_input:
            features = utterance_cmvn(features, feature_lens)
        out_lens = subsampled_lengths(feature_lens.to(torch.long), self.config.subsampling)
        x = self.pos(self.subsampling(features))
        pad = lengths_to_padding_mask(out_lens, x.size(1))
        for block in self.blocks:
            x = block(x, pad)
        return x, out_lens


def build_model(config: AsrConfig | Mapping[str, Any]) -> CtcConformer:
    """The one builder for ``kind == "ctc_conformer"`` checkpoints."""
    if not isinstance(config, AsrConfig):
        config = AsrConfig.from_dict(config)
    return CtcConformer(config)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
