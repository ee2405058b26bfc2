"""Pretraining models: an encoder from :mod:`w2v.models` wrapped with its self-supervised objective.

Every pretrainer maps ``(waveforms [B, T], lengths [B])`` to a :class:`PretrainOutput` and exposes

* ``encoder``: the module whose ``state_dict`` goes into checkpoints (``load_pretrained`` rebuilds it
  from ``encoder_kind`` and ``encoder_config_dict()``);
* ``after_update(num_updates)``: called after every optimizer update (temperature schedules,
  data2vec's EMA teacher); ``set_num_updates(num_updates)`` restores the schedules on resume.

Transformer encoders are used through ``feature_extractor(waveforms, lengths) -> (features [B, F, C],
frame_lengths)`` and ``encode(features, frame_lengths, mask=None, num_layers=None, return_ffn=False)``
returning ``layer_results`` (and ``ffn_results``); masked frames get the encoder's learned
``mask_embedding``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from w2v.models.padding import lengths_to_padding_mask
from w2v.models.quantizers import ExponentialTemperature, GumbelVectorQuantizer
from w2v.ssl.augment import utterance_mix
from w2v.ssl.ema import EMATeacher, TauSchedule, data2vec_targets
from w2v.ssl.future_prediction import FuturePredictionLoss
from w2v.ssl.losses import (
    codeword_logits,
    diversity_loss,
    feature_penalty,
    masked_prediction_loss,
    regression_loss,
    wav2vec2_contrastive_loss,
)
from w2v.ssl.masking import compute_span_mask


class PretrainOutput(NamedTuple):
    """Loss terms (scalars) and statistics of one batch; terms a family does not use are 0."""

    loss: Tensor  # what is minimised
    contrastive: Tensor  # main term: L_m (wav2vec 2.0), sum_k L_k (wav2vec), CE (HuBERT), regression (data2vec)
    diversity: Tensor  # L_d (unweighted)
    feature_penalty: Tensor  # mean squared conv feature (unweighted)
    quantizer_loss: Tensor  # k-means codebook + commitment loss (vq-wav2vec)
    accuracy: Tensor  # positive ranked first (contrastive) / cluster id right (HuBERT); NaN for data2vec
    code_perplexity: Tensor  # perplexity of the hard codeword choices
    prob_perplexity: Tensor  # perplexity of the averaged soft distribution
    temperature: float  # Gumbel temperature; EMA tau for data2vec
    num_scored: int  # masked frames (or predicted (frame, step) pairs) in the loss


def _zero(ref: Tensor) -> Tensor:
    return ref.new_zeros((), dtype=torch.float32)


def _valid(frame_lengths: Tensor | None, batch: int, frames: int, device) -> Tensor:
    """``[batch, frames]`` True at valid frames."""
    if frame_lengths is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    return ~lengths_to_padding_mask(frame_lengths.to(device), frames)


def _config_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


class _TransformerPretrainer(nn.Module):
    """Shared plumbing for the masked-prediction families."""

    encoder: nn.Module

    @property
    def encoder_kind(self) -> str:
        return type(self.encoder.config).kind

    def encoder_config_dict(self) -> dict:
        return _config_dict(self.encoder.config)

    def _features_and_mask(self, waveforms: Tensor, lengths: Tensor | None, mask_prob: float, mask_length: int, min_masks: int):
        if waveforms.dim() != 2:
            raise ValueError(f"Expected 2D (batch, time) audio. Found: {list(waveforms.shape)}")
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long, device=waveforms.device)
        features, frame_lengths = self.encoder.feature_extractor(waveforms, lengths)
        b, f, _ = features.shape
        valid = _valid(frame_lengths, b, f, features.device)
        mask = compute_span_mask((b, f), mask_prob, mask_length, frame_lengths, min_masks, device=features.device)
        return features, frame_lengths, valid, mask

    def set_num_updates(self, num_updates: int) -> None:
        pass

    def after_update(self, num_updates: int) -> None:
        self.set_num_updates(num_updates)


# ---------------------------------------------------------------------------------------------
# wav2vec 2.0


@dataclass
class Wav2Vec2PretrainConfig:
    mask_prob: float = 0.065
    mask_length: int = 10
    min_masks: int = 2
    num_negatives: int = 100
    logit_temperature: float = 0.1  # kappa
    num_groups: int = 2
    num_vars: int = 320
    codevector_dim: int = 256
    final_dim: int = 256
    temperature_start: float = 2.0
    temperature_floor: float = 0.5  # 0.1 for LARGE
    temperature_decay: float = 0.999995
    diversity_weight: float = 0.1  # alpha
    feature_penalty_weight: float = 10.0


class Wav2Vec2Pretrainer(_TransformerPretrainer):
    """wav2vec 2.0: contrastive task over quantized, unmasked conv features at masked frames.

    The quantizer reads the encoder's layer-normalised conv features (before the projection to D); both
    the context vectors and the quantized targets are projected to ``final_dim``.
    """

    def __init__(self, encoder: nn.Module, config: Wav2Vec2PretrainConfig = Wav2Vec2PretrainConfig()) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        conv_dim = encoder.config.conv_layers[-1][0]
        self.quantizer = GumbelVectorQuantizer(
            conv_dim,
            config.num_groups,
            config.num_vars,
            config.codevector_dim,
            ExponentialTemperature(config.temperature_start, config.temperature_floor, config.temperature_decay),
        )
        self.project_q = nn.Linear(config.codevector_dim, config.final_dim)
        self.final_proj = nn.Linear(encoder.config.embed_dim, config.final_dim)

    def set_num_updates(self, num_updates: int) -> None:
        self.quantizer.set_num_updates(num_updates)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> PretrainOutput:
        cfg = self.config
        features, frame_lengths, valid, mask = self._features_and_mask(
            waveforms, lengths, cfg.mask_prob, cfg.mask_length, cfg.min_masks
        )
        penalty = feature_penalty(features, valid)
        out = self.encoder.encode(features, frame_lengths, mask=mask)
        context = self.final_proj(out.output)
        q = self.quantizer(out.features, valid)  # layer-normalised, unmasked conv features
        targets = self.project_q(q.quantized)
        con = wav2vec2_contrastive_loss(context, targets, mask, cfg.num_negatives, cfg.logit_temperature)
        div = diversity_loss(q.avg_probs)
        loss = con.loss + cfg.diversity_weight * div + cfg.feature_penalty_weight * penalty
        return PretrainOutput(
            loss=loss,
            contrastive=con.loss.detach(),
            diversity=div.detach(),
            feature_penalty=penalty.detach(),
            quantizer_loss=_zero(loss),
            accuracy=con.accuracy,
            code_perplexity=q.code_perplexity.detach(),
            prob_perplexity=q.prob_perplexity.detach(),
            temperature=q.temperature,
            num_scored=int(mask.sum()),
        )


# ---------------------------------------------------------------------------------------------
# data2vec


@dataclass
class Data2VecPretrainConfig:
    mask_prob: float = 0.065
    mask_length: int = 10
    min_masks: int = 2
    top_k_layers: int = 8
    loss_beta: float = 0.0  # 0: L2, > 0: smooth L1 threshold
    tau_start: float = 0.999
    tau_end: float = 0.9999
    tau_ramp_updates: int = 30_000
    use_ffn_targets: bool = True  # FFN output before the last residual, as the paper


def _shared_with_teacher(name: str) -> bool:
    """data2vec speech shares the conv feature encoder, the projection to D and the positional conv
    with the teacher (fairseq feeds the teacher the student's projected features)."""
    return name.startswith("feature_extractor") or "feature_projection" in name or "pos_conv" in name


class Data2VecPretrainer(_TransformerPretrainer):
    """data2vec: regress the EMA teacher's averaged top-K layer outputs at masked frames."""

    def __init__(self, encoder: nn.Module, config: Data2VecPretrainConfig = Data2VecPretrainConfig()) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.final_proj = nn.Linear(encoder.config.embed_dim, encoder.config.embed_dim)
        schedule = TauSchedule(config.tau_start, config.tau_end, config.tau_ramp_updates)
        self.teacher = EMATeacher(encoder, schedule, shared=_shared_with_teacher)

    def set_num_updates(self, num_updates: int) -> None:
        self.teacher.set_num_updates(num_updates)

    def after_update(self, num_updates: int) -> None:
        self.teacher.update(self.encoder)
        self.teacher.set_num_updates(num_updates)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> PretrainOutput:
        cfg = self.config
        features, frame_lengths, valid, mask = self._features_and_mask(
            waveforms, lengths, cfg.mask_prob, cfg.mask_length, cfg.min_masks
        )
        out = self.encoder.encode(features, frame_lengths, mask=mask)
        predictions = self.final_proj(out.output[mask])
        with torch.no_grad():
            t = self.teacher.model.encode(features.detach(), frame_lengths, mask=None, return_ffn=cfg.use_ffn_targets)
            layers = t.ffn_results if cfg.use_ffn_targets and getattr(t, "ffn_results", None) else t.layer_results
            targets = data2vec_targets(layers, cfg.top_k_layers, valid)[mask]
        reg = regression_loss(predictions, targets, cfg.loss_beta)
        penalty = feature_penalty(features.detach(), valid)
        nan = torch.tensor(float("nan"))
        return PretrainOutput(
            loss=reg,
            contrastive=reg.detach(),
            diversity=_zero(reg),
            feature_penalty=penalty,
            quantizer_loss=_zero(reg),
            accuracy=nan,
            code_perplexity=_zero(reg),
            prob_perplexity=_zero(reg),
            temperature=self.teacher.tau,
            num_scored=int(mask.sum()),
        )


# ---------------------------------------------------------------------------------------------
# HuBERT / WavLM

Labeler = Callable[[Tensor, Tensor, int], Tensor]
"""``(waveforms [B, T], lengths [B], num_frames) -> labels [B, num_frames]`` (-1: no label)."""


@dataclass
class HubertPretrainConfig:
    num_clusters: int = 100  # 100 (MFCC iteration), 500 (layer-6 iteration)
    mask_prob: float = 0.08
    mask_length: int = 10
    min_masks: int = 2
    final_dim: int = 256
    logit_temperature: float = 0.1
    unmasked_weight: float = 0.0  # HuBERT's loss on unmasked frames (0 in the paper's default)
    feature_penalty_weight: float = 10.0
    mix_prob: float = 0.0  # WavLM utterance mixing; 0 for HuBERT
    max_overlap: float = 0.5


class HubertPretrainer(_TransformerPretrainer):
    """HuBERT masked prediction of k-means ids; with ``mix_prob > 0`` WavLM's denoising variant.

    Args:
        encoder: transformer encoder (HuBERT or WavLM).
        labeler: frame labels of the *clean* input; or pass ``labels`` to ``forward``.
    """

    def __init__(self, encoder: nn.Module, config: HubertPretrainConfig = HubertPretrainConfig(), labeler: Labeler | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.labeler = labeler
        self.final_proj = nn.Linear(encoder.config.embed_dim, config.final_dim)
        self.label_embeddings = nn.Parameter(torch.empty(config.num_clusters, config.final_dim))
        nn.init.uniform_(self.label_embeddings)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, labels: Tensor | None = None) -> PretrainOutput:
        cfg = self.config
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long, device=waveforms.device)
        clean = waveforms
        if self.training and cfg.mix_prob > 0:
            waveforms, _ = utterance_mix(waveforms, lengths, cfg.mix_prob, cfg.max_overlap)
        features, frame_lengths, valid, mask = self._features_and_mask(
            waveforms, lengths, cfg.mask_prob, cfg.mask_length, cfg.min_masks
        )
        if labels is None:
            if self.labeler is None:
                raise ValueError("HubertPretrainer needs a labeler or explicit labels")
            with torch.no_grad():
                labels = self.labeler(clean, lengths, features.shape[1])
        labels = labels.to(features.device)
        if labels.shape[1] < features.shape[1]:  # labels may be a frame short: leave the rest unscored
            labels = torch.cat([labels, labels.new_full((labels.shape[0], features.shape[1] - labels.shape[1]), -1)], 1)
        labels = labels[:, : features.shape[1]]
        penalty = feature_penalty(features, valid)
        out = self.encoder.encode(features, frame_lengths, mask=mask)
        proj = self.final_proj(out.output)
        scored = mask & (labels >= 0)
        logits = codeword_logits(proj[scored], self.label_embeddings, cfg.logit_temperature)
        masked_loss, accuracy = masked_prediction_loss(logits, labels[scored])
        loss = masked_loss + cfg.feature_penalty_weight * penalty
        if cfg.unmasked_weight > 0:
            unscored = ~mask & valid & (labels >= 0)
            u_logits = codeword_logits(proj[unscored], self.label_embeddings, cfg.logit_temperature)
            loss = loss + cfg.unmasked_weight * masked_prediction_loss(u_logits, labels[unscored])[0]
        return PretrainOutput(
            loss=loss,
            contrastive=masked_loss.detach(),
            diversity=_zero(loss),
            feature_penalty=penalty.detach(),
            quantizer_loss=_zero(loss),
            accuracy=accuracy,
            code_perplexity=_zero(loss),
            prob_perplexity=_zero(loss),
            temperature=cfg.logit_temperature,
            num_scored=int(scored.sum()),
        )


def wavlm_pretrain_config(**overrides) -> HubertPretrainConfig:
    """HuBERT objective + utterance mixing (20 % of utterances, < 50 % overlap)."""
    values = dict(mix_prob=0.2)
    values.update(overrides)
    return HubertPretrainConfig(**values)


# ---------------------------------------------------------------------------------------------
# wav2vec 1.0 / vq-wav2vec


@dataclass
class Wav2VecPretrainConfig:
    prediction_steps: int = 12  # K
    num_negatives: int = 10  # lambda
    prediction_offset: int = 1  # 1: paper's z_{i+k}; fairseq "auto" uses 3 for the base encoder
    quantizer_loss_weight: float = 1.0  # vq-wav2vec k-means
    # Not in vq-wav2vec: wav2vec 2.0's codebook diversity term for the Gumbel quantizer. On the tiny
    # model it keeps the codebook in use (code perplexity ~10 instead of ~2.5 of 32 after 40 updates).
    # Note the binary loss has a trivial optimum: a constant prediction scores
    # -log(1/(1+lambda)) - lambda log(lambda/(1+lambda)) = 3.35 for lambda = 10, which small models
    # reach by making z constant over time before they learn to discriminate.
    diversity_weight: float = 0.0


class Wav2VecPretrainer(nn.Module):
    """wav2vec / vq-wav2vec future prediction around a :class:`Wav2VecModel` or :class:`VqWav2VecModel`."""

    def __init__(self, model: nn.Module, config: Wav2VecPretrainConfig = Wav2VecPretrainConfig()) -> None:
        super().__init__()
        self.encoder = model
        self.config = config
        self.is_vq = hasattr(model, "vector_quantizer")
        dim_c = model.feature_aggregator.out_channels
        dim_z = model.feature_extractor.out_channels
        self.prediction = FuturePredictionLoss(dim_c, dim_z, config.prediction_steps, config.num_negatives, config.prediction_offset)

    @property
    def encoder_kind(self) -> str:
        return "vq_wav2vec" if self.is_vq else "wav2vec"

    def encoder_config_dict(self) -> dict:
        return _config_dict(self.encoder.config)

    def set_num_updates(self, num_updates: int) -> None:
        if self.is_vq:
            self.encoder.set_num_updates(num_updates)

    def after_update(self, num_updates: int) -> None:
        self.set_num_updates(num_updates)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> PretrainOutput:
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long, device=waveforms.device)
        if self.is_vq:
            _, targets, context, q, frame_lengths = self.encoder(waveforms, lengths)
        else:
            targets, context, frame_lengths = self.encoder(waveforms, lengths)
            q = None
        pred = self.prediction(context.transpose(1, 2), targets.transpose(1, 2), frame_lengths)
        qloss = q.commitment_loss if q is not None else _zero(pred.loss)
        loss = pred.loss + self.config.quantizer_loss_weight * qloss
        zero = _zero(loss)
        div = diversity_loss(q.avg_probs) if q is not None else zero  # k-means: from hard counts, no gradient
        if self.config.diversity_weight > 0:
            loss = loss + self.config.diversity_weight * div
        return PretrainOutput(
            loss=loss,
            contrastive=pred.loss.detach(),
            diversity=div.detach(),
            feature_penalty=zero,
            quantizer_loss=qloss.detach(),
            accuracy=pred.accuracy,
            code_perplexity=q.code_perplexity.detach() if q is not None else zero,
            prob_perplexity=q.prob_perplexity.detach() if q is not None else zero,
            temperature=q.temperature if q is not None else 0.0,
            num_scored=pred.num_predictions,
        )
