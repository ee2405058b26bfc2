"""k-means targets for HuBERT / WavLM: MFCC (iteration 1) or a chosen layer's features (iteration 2).

:func:`fit_kmeans` runs full-batch Lloyd iterations or mini-batch k-means (Sculley 2010) in torch,
initialised with k-means++. :func:`mfcc_features` gives 39-dim MFCC + delta + delta-delta at a
chosen frame shift (20 ms matches the transformer encoders' frame rate, so labels align 1:1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio
from torch import Tensor

from w2v import serialization
from w2v.runtime import SAMPLE_RATE
from w2v.utils import atomic_torch_save


@dataclass
class KMeans:
    """Centroids ``[k, dim]``; :meth:`predict` maps ``[N, dim]`` to cluster ids ``[N]``."""

    centroids: Tensor

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    def distances(self, x: Tensor) -> Tensor:
        """Squared Euclidean distances ``[N, k]``."""
        c = self.centroids.to(x.device, torch.float32)
        x = x.float()
        return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)[None]).clamp_min(0.0)

    def predict(self, x: Tensor) -> Tensor:
        return self.distances(x).argmin(dim=1)

    def inertia(self, x: Tensor) -> float:
        """Sum of squared distances to the nearest centroid."""
        return float(self.distances(x).min(dim=1).values.sum())

    def save(self, path: str | Path) -> None:
        atomic_torch_save({"centroids": self.centroids.cpu()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "KMeans":
        return cls(serialization.load(path, what="k-means file")["centroids"])


def _kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        probs = d2 / total if total > 0 else torch.full_like(d2, 1.0 / n)
        idx = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(1))
    return torch.stack(centroids)


def fit_kmeans(
    x: Tensor,
    num_clusters: int,
    num_iters: int = 50,
    batch_size: int | None = None,
    tol: float = 1e-6,
    seed: int = 0,
) -> KMeans:
    """Cluster the rows of ``x: [N, dim]``.

    Args:
        num_clusters: k (must be <= N).
        num_iters: Lloyd iterations (full batch) or mini-batch steps.
        batch_size: None for full-batch Lloyd; otherwise mini-batch k-means with per-centroid
            learning rates ``1 / count``.
        tol: full batch stops when no centroid moves more than this (squared).
    """
    if x.dim() != 2:
        raise ValueError(f"Expected [N, dim] features. Found: {list(x.shape)}")
    if not 0 < num_clusters <= x.shape[0]:
        raise ValueError(f"Need 0 < num_clusters <= N; got k={num_clusters}, N={x.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    x = x.float().cpu()
    init_pool = x if batch_size is None else x[torch.randperm(x.shape[0], generator=g)[: max(batch_size, num_clusters) * 4]]
    centroids = _kmeans_pp_init(init_pool, num_clusters, g)
    model = KMeans(centroids)
    if batch_size is None:
        for _ in range(num_iters):
            ids = model.predict(x)
            sums = torch.zeros_like(centroids).index_add_(0, ids, x)
            counts = torch.bincount(ids, minlength=num_clusters).float()
            new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
            shift = (new - centroids).pow(2).sum(1).max()
            centroids = new
            model = KMeans(centroids)
            if shift <= tol:
                break
    else:
        counts = torch.zeros(num_clusters)
        for _ in range(num_iters):
            batch = x[torch.randint(x.shape[0], (batch_size,), generator=g)]
            ids = model.predict(batch)
            for c in ids.unique():
                members = batch[ids == c]
                counts[c] += members.shape[0]
                lr = members.shape[0] / counts[c]
                centroids[c] = (1 - lr) * centroids[c] + lr * members.mean(0)
            model = KMeans(centroids)
    return model


def mfcc_features(waveform: Tensor, sample_rate: int = SAMPLE_RATE, frame_shift_ms: float = 10.0, num_ceps: int = 13) -> Tensor:
    """Kaldi-compatible MFCC with deltas and delta-deltas.

    Args:
        waveform: ``[samples]`` (float, any scale).
        frame_shift_ms: 10 for HuBERT's 100 Hz labels, 20 for labels at the encoders' 50 Hz.

    Returns:
        ``[frames, 3 * num_ceps]`` (39-dim by default).
    """
    if waveform.dim() != 1:
        raise ValueError(f"Expected 1D (time) audio. Found: {list(waveform.shape)}")
    if waveform.numel() < int(0.025 * sample_rate):
        return waveform.new_zeros(0, 3 * num_ceps)
    mfcc = torchaudio.compliance.kaldi.mfcc(
        waveform[None].float() * 32768.0,  # kaldi works on 16-bit sample values
        sample_frequency=sample_rate,
        frame_shift=frame_shift_ms,
        num_ceps=num_ceps,
        dither=0.0,
    )  # [frames, num_ceps]
    t = mfcc.T  # [num_ceps, frames]
    d1 = torchaudio.functional.compute_deltas(t)
    d2 = torchaudio.functional.compute_deltas(d1)
    return torch.cat([t, d1, d2], dim=0).T.contiguous()


class MfccLabeler:
    """Frame labels from MFCC k-means, at ``frame_shift_ms`` per label (iteration 1)."""

    def __init__(self, kmeans: KMeans, frame_shift_ms: float = 20.0, sample_rate: int = SAMPLE_RATE) -> None:
        self.kmeans = kmeans
        self.frame_shift_ms = frame_shift_ms
        self.sample_rate = sample_rate

    @property
    def num_clusters(self) -> int:
        return self.kmeans.num_clusters

    def __call__(self, waveforms: Tensor, lengths: Tensor, num_frames: int) -> Tensor:
        """``waveforms [B, T]``, ``lengths [B]`` -> labels ``[B, num_frames]`` (-1 where no MFCC frame)."""
        labels = torch.full((waveforms.shape[0], num_frames), -1, dtype=torch.long)
        for b in range(waveforms.shape[0]):
            feats = mfcc_features(waveforms[b, : int(lengths[b])].cpu(), self.sample_rate, self.frame_shift_ms)
            n = min(num_frames, feats.shape[0])
            if n:
                labels[b, :n] = self.kmeans.predict(feats[:n])
        return labels.to(waveforms.device)


class LayerLabeler:
    """Frame labels from k-means over a frozen encoder's layer (iteration 2, e.g. layer 6).

    ``encoder.extract_features(waveforms, lengths)`` must give ``(layers, frame_lengths)``
    with ``layers[i]: [B, frames, dim]``.
    """

    def __init__(self, encoder: torch.nn.Module, layer: int, kmeans: KMeans) -> None:
        self.encoder = encoder.eval()
        self.layer = layer
        self.kmeans = kmeans

    @property
    def num_clusters(self) -> int:
        return self.kmeans.num_clusters

    @torch.no_grad()
    def __call__(self, waveforms: Tensor, lengths: Tensor, num_frames: int) -> Tensor:
        layers, _ = self.encoder.extract_features(waveforms, lengths)
        feats = layers[self.layer]
        b, f, d = feats.shape
        ids = self.kmeans.predict(feats.reshape(-1, d)).view(b, f)
        labels = torch.full((b, num_frames), -1, dtype=torch.long, device=ids.device)
        n = min(f, num_frames)
        labels[:, :n] = ids[:, :n]
        return labels
