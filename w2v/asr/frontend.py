"""A pretrained wav2vec-family encoder as the CTC model's front end, run on the fly from audio.

Two uses (s3prl's "weighted sum" and fairseq's fine-tuning, in one module):

- frozen, ``layer == 0``: a learned softmax-weighted sum of every layer's output, each layer
  normalised first (zero mean, unit variance per frame); only the weights train.
- ``finetune=True``: the Transformer trains too (the conv feature encoder stays frozen, as in
  wav2vec 2.0 fine-tuning); ``layer == L`` takes block L's output, ``0`` the weighted sum.

The model config stores the spec (:func:`make_spec`): encoder kind and config, layer, finetune,
bf16, and the SSL checkpoint's path and digest. A frozen encoder's weights are left out of the
CTC checkpoints (they would repeat hundreds of MB per epoch) and restored from that checkpoint,
refusing one whose digest changed (:func:`load_model_state`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ENCODER_PREFIX = "frontend.encoder."


def make_spec(checkpoint: str, layer: int, finetune: bool, bf16: bool = False) -> tuple[dict, dict]:
    """(spec for ``AsrConfig.ssl``, the encoder's weights) from an SSL checkpoint.

    ``checkpoint``: anything :func:`w2v.features.ssl.resolve_checkpoint` accepts.
    """
    from w2v.features.ssl import SslFeatureExtractor

    ex = SslFeatureExtractor(checkpoint, max(layer, 1))
    if layer < 0 or layer > ex.num_layers:
        raise ValueError(f"{ex.checkpoint}: layer {layer} does not exist (0 = weighted sum of 1..{ex.num_layers})")
    encoder_config = dataclasses.asdict(ex.config)
    if "layerdrop" in encoder_config:  # a dropped block would leave a hole in the layer stack
        encoder_config["layerdrop"] = 0.0
    spec = {
        "kind": ex.kind, "encoder": encoder_config, "num_layers": ex.num_layers, "layer": layer,
        "finetune": finetune, "bf16": bf16, "feature_dim": ex.feature_dim,
        "frame_shift": ex.frame_shift, "checkpoint": str(ex.checkpoint.resolve()),
        "digest": ex.digest,
    }
    return spec, ex.model.state_dict()


class SslFrontend(nn.Module):
    """``(waveforms [B, T], lengths [B]) -> (features [B, F, D], frames [B])`` at the encoder's rate."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        from w2v.models.loading import BUILDERS

        self.encoder, _ = BUILDERS[spec["kind"]](spec["encoder"])
        self.layer = int(spec["layer"])
        self.finetune = bool(spec["finetune"])
        self.bf16 = bool(spec["bf16"])
        # Set by the training loop: a fine-tuned encoder can stay frozen for its first updates.
        self.frozen = False
        self.layer_weights = nn.Parameter(torch.zeros(int(spec["num_layers"]))) if self.layer == 0 else None
        for p in self.encoder.parameters():
            p.requires_grad = False
        if self.finetune:
            conv = getattr(self.encoder, "feature_extractor", None)
            frozen = {id(p) for p in conv.parameters()} if conv is not None else set()
            for p in self.encoder.parameters():
                p.requires_grad = id(p) not in frozen
        self.encoder.eval()

    def train(self, mode: bool = True) -> "SslFrontend":
        super().train(mode)
        if not self.finetune:
            self.encoder.eval()  # a frozen encoder never uses dropout
        return self

    def _layers(self, waveforms: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor | None]:
        num_layers = self.layer or None
        grad = self.finetune and not self.frozen and self.training and torch.is_grad_enabled()
        with torch.autocast(waveforms.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if grad and hasattr(self.encoder, "encode"):
                with torch.no_grad():  # the conv feature encoder is frozen
                    feats, frames = self.encoder.feature_extractor(waveforms, lengths)
                out = self.encoder.encode(feats, frames, num_layers=num_layers)
                return out.layer_results, out.lengths
            with torch.set_grad_enabled(grad):
                return self.encoder.extract_features(waveforms, lengths, num_layers=num_layers)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        layers, frames = self._layers(waveforms, lengths)
        layers = [h.float() for h in layers]
        if frames is None:
            frames = torch.full((waveforms.shape[0],), layers[0].shape[1], dtype=torch.long)
        if self.layer_weights is None:
            return layers[self.layer - 1], frames.to(torch.long)
        w = torch.softmax(self.layer_weights, dim=0)
        x = sum(w[i] * F.layer_norm(h, h.shape[-1:]) for i, h in enumerate(layers))
        return x, frames.to(torch.long)


def checkpoint_state(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` without a frozen SSL encoder's weights."""
    state = model.state_dict()
    frontend = getattr(model, "frontend", None)
    if frontend is None or frontend.finetune:
        return state
    return {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}


def load_model_state(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load a CTC checkpoint's state; a frozen encoder comes from the SSL checkpoint named in the
    config, which must still have the digest it had at training time."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    frontend = getattr(model, "frontend", None)
    encoder_missing = [k for k in missing if k.startswith(ENCODER_PREFIX)]
    other = [k for k in missing if not k.startswith(ENCODER_PREFIX)]
    if unexpected or other or (encoder_missing and (frontend is None or frontend.finetune)):
        raise ValueError(f"{source}: weights do not fit the model: missing {other or encoder_missing}, "
                         f"unexpected {list(unexpected)}")
    if encoder_missing:
        restore_frozen_encoder(model, source)


def restore_frozen_encoder(model: nn.Module, source: str) -> None:
    from w2v.features.ssl import checkpoint_digest, resolve_checkpoint
    from w2v.models import load_pretrained

    spec = model.config.ssl
    path = resolve_checkpoint(spec["checkpoint"])
    digest = checkpoint_digest(path)
    if digest != spec["digest"]:
        raise ValueError(
            f"{source} was trained on the frozen encoder of {spec['checkpoint']} (digest "
            f"{spec['digest']}); that file now has digest {digest}"
        )
    encoder, _ = load_pretrained(path)
    model.frontend.encoder.load_state_dict(encoder.state_dict())
