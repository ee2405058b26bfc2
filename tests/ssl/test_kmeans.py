import math

import pytest
import torch

from w2v.ssl.augment import utterance_mix
from w2v.ssl.kmeans import KMeans, MfccLabeler, fit_kmeans, mfcc_features


def blobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    ids = torch.randint(4, (800,), generator=g)
    return centers[ids] + 0.5 * torch.randn(800, 2, generator=g), ids, centers


@pytest.mark.parametrize("batch_size", [None, 64])
def test_kmeans_recovers_blobs(batch_size):
    x, ids, centers = blobs()
    km = fit_kmeans(x, 4, num_iters=30 if batch_size is None else 200, batch_size=batch_size, seed=1)
    # every true center has a centroid within 0.3
    d = torch.cdist(centers, km.centroids)
    assert d.min(dim=1).values.max() < 0.3
    pred = km.predict(x)
    # clustering agrees with the truth up to a permutation
    for c in range(4):
        assert pred[ids == c].unique().numel() == 1
    assert km.inertia(x) < 800 * 2 * 0.25 * 1.3


def test_kmeans_save_load(tmp_path):
    km = KMeans(torch.randn(5, 3))
    km.save(tmp_path / "km.pt")
    assert torch.equal(KMeans.load(tmp_path / "km.pt").centroids, km.centroids)


def test_mfcc_39_dims_and_frame_rates():
    t = torch.arange(16000) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * 440 * t)
    f10 = mfcc_features(wav)
    f20 = mfcc_features(wav, frame_shift_ms=20)
    assert f10.shape == (98, 39)  # kaldi snip_edges: 1 + (16000 - 400) // 160
    assert f20.shape == (49, 39)  # = wav2vec 2.0 frames for 1 s
    # deltas of a stationary tone are ~0 in the middle
    assert f10[10:-10, 13:].abs().max() < 0.05 * f10[10:-10, :13].abs().max()
    km = KMeans(f20[:3].clone())
    labels = MfccLabeler(km)(torch.stack([wav, wav]), torch.tensor([16000, 8000]), 49)
    assert labels.shape == (2, 49)
    assert (labels[1, 24:] == -1).all() and (labels[1, :24] >= 0).all() and (labels[0] >= 0).all()


def test_utterance_mix_region_and_energy():
    g = torch.Generator().manual_seed(0)
    wavs = torch.randn(4, 1000, generator=g) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    lengths = torch.tensor([1000, 800, 600, 900])
    wavs[1, 800:] = 0
    wavs[2, 600:] = 0
    wavs[3, 900:] = 0
    mixed, regions = utterance_mix(wavs, lengths, mix_prob=1.0, generator=g)
    assert len(regions) == 4
    for r in regions:
        L = int(lengths[r.primary])
        assert 1 <= r.length < 0.5 * L
        assert r.secondary != r.primary
        diff = mixed[r.primary] - wavs[r.primary]
        outside = torch.ones(1000, dtype=torch.bool)
        outside[r.start : r.start + r.length] = False
        assert torch.equal(diff[outside], torch.zeros(int(outside.sum())))
        added = diff[r.start : r.start + r.length]
        seg = wavs[r.secondary, r.source_start : r.source_start + r.length]
        scale = added.norm() / seg.norm()
        assert torch.allclose(added, scale * seg, atol=1e-5)
        e_primary = wavs[r.primary, :L].pow(2).mean()
        ratio_db = 10 * torch.log10(e_primary / added.pow(2).mean())
        assert ratio_db.item() == pytest.approx(r.energy_ratio_db, abs=1e-3)
        assert -5 <= r.energy_ratio_db <= 5
    assert not torch.equal(mixed, wavs)
    none, regions = utterance_mix(wavs, lengths, mix_prob=0.0, generator=g)
    assert torch.equal(none, wavs) and regions == []
