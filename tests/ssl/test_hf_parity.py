"""Peer check against Hugging Face's wav2vec 2.0 pretraining pieces (random tensors, no downloads)."""

import pytest
import torch

from w2v.models.quantizers import _masked_mean, perplexity
from w2v.ssl.losses import contrastive_logits, diversity_loss

hf = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")


def test_contrastive_logits_match_hf():
    torch.manual_seed(0)
    n, k, d = 7, 5, 16
    pred, pos, negs = torch.randn(n, d), torch.randn(n, d), torch.randn(n, k, d)
    ours = contrastive_logits(pred, pos, negs, temperature=0.1)  # [N, 1 + K]
    theirs = hf.Wav2Vec2ForPreTraining.compute_contrastive_logits(
        pos[None], negs.permute(1, 0, 2), pred[None], temperature=0.1
    )  # [1 + K, N]
    assert torch.allclose(ours, theirs.T, atol=1e-5)


def test_perplexity_and_diversity_match_hf():
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(2, 9, 2, 20) * 3, dim=-1)  # [B, T, G, V]
    mask = torch.rand(2, 9) > 0.3
    flat = probs.reshape(18, 2, 20)
    theirs = hf.Wav2Vec2GumbelVectorQuantizer._compute_perplexity(flat, mask)
    ours = perplexity(_masked_mean(flat, mask.reshape(-1)))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    # HF: L_d = (GV - perplexity) / GV
    assert diversity_loss(_masked_mean(flat, mask.reshape(-1))).item() == pytest.approx((40 - theirs.item()) / 40, rel=1e-5)
