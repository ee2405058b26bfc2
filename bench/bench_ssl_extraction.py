"""Batched vs one-cut-at-a-time SSL feature extraction: time, real-time factor, and the largest
difference between the two, side by side.

Usage:
  python bench/bench_ssl_extraction.py [--model wav2vec2_base | --checkpoint exp/ssl_wav2vec2] \
      [--layer 12] [--num-cuts 20] [--min-seconds 2] [--max-seconds 15] [--threads 1,2] \
      [--batch-durations 50,100] [--paddings 0.05,0.25] [--precisions fp32,bf16] [--repeats 2]
      [--long-seconds 0]

The cuts are synthetic (noise bursts of uniform random length, written as wav files) and the
model is randomly initialised from a factory of w2v.models unless --checkpoint is given; the whole
extraction path is timed (audio loading, encoding, numpy storage). The real-time factor is
seconds of compute per second of audio. On CUDA (when available) the same runs on the GPU, one
process. --long-seconds N adds one recording of N seconds, encoded whole and in windows
(--max-segment-seconds), and prints their difference and memory-bounded time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lhotse import CutSet, Recording  # noqa: E402

from w2v import models  # noqa: E402
from w2v.features.ssl import (  # noqa: E402
    ONE_AT_A_TIME,
    SAMPLING_RATE,
    BatchLimits,
    SslFeatureExtractor,
    compute_ssl_features,
    plan_batches,
)


def synthetic_cuts(root: Path, durations: list[float], seed: int = 0) -> CutSet:
    rng = np.random.default_rng(seed)
    cuts = []
    for i, d in enumerate(durations):
        n = int(d * SAMPLING_RATE)
        audio = rng.standard_normal(n) * np.sin(np.linspace(0, 3 * d, n)) ** 2 * 0.1
        path = root / f"c{i}.wav"
        sf.write(path, audio.astype(np.float32), SAMPLING_RATE)
        cuts.append(Recording.from_file(path, recording_id=f"c{i}").to_cut())
    return CutSet.from_cuts(cuts)


def timed(extractor: SslFeatureExtractor, cuts: CutSet, limits: BatchLimits, storage: Path) -> tuple[float, dict]:
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    got, failed = compute_ssl_features(cuts, extractor, storage, "numpy", progress=False, limits=limits)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert not failed, failed
    return elapsed, {c.id: c.load_features() for c in got}


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def compare(args, checkpoint: Path, device: str, threads: list[int], cuts: CutSet, tmp: Path) -> None:
    audio_s = sum(c.duration for c in cuts)
    print(f"\n{device}: {len(cuts)} cuts, {audio_s:.1f} s of audio; RTF = compute s / audio s; best of "
          f"{args.repeats}, the configurations taking turns")
    print("| precision | threads | batch s | padding | batches | per-cut s | batched s | batched / per-cut "
          "| RTF per-cut | RTF batched | max abs diff |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    batched = [BatchLimits(float(s), padding=float(p))
               for s in args.batch_durations.split(",") for p in args.paddings.split(",")]
    for precision in args.precisions.split(","):
        ex = SslFeatureExtractor(checkpoint, args.layer, bf16=precision == "bf16", device=device)
        assert ex.pads_exactly
        for t in threads:
            torch.set_num_threads(t)
            warm = CutSet.from_cuts(list(cuts)[:2])
            timed(ex, warm, ONE_AT_A_TIME, tmp / "warm")  # oneDNN / cuDNN primitive creation
            timed(ex, warm, BatchLimits(1e9, padding=1.0), tmp / "warm")
            best: dict[BatchLimits, float] = {}
            feats: dict[BatchLimits, dict] = {}
            for _ in range(args.repeats):
                for limits in [ONE_AT_A_TIME, *batched]:
                    elapsed, feats[limits] = timed(ex, cuts, limits, tmp / f"f-{precision}-{t}-{len(best)}")
                    best[limits] = min(elapsed, best.get(limits, float("inf")))
            alone_s = best[ONE_AT_A_TIME]
            for limits in batched:
                num = len(plan_batches([c.duration for c in cuts], limits))
                print(f"| {precision} | {t if device == 'cpu' else '-'} | {limits.seconds:g} | {limits.padding:g} "
                      f"| {num} | {alone_s:.2f} | {best[limits]:.2f} | {best[limits] / alone_s:.2f}× "
                      f"| {alone_s / audio_s:.3f} | {best[limits] / audio_s:.3f} "
                      f"| {max_diff(feats[ONE_AT_A_TIME], feats[limits]):.2e} |")


def long_recording(args, checkpoint: Path, device: str, tmp: Path) -> None:
    cut = synthetic_cuts(tmp / "long", [args.long_seconds], seed=1)[0]
    whole = SslFeatureExtractor(checkpoint, args.layer, device=device, max_segment_seconds=0)
    split = SslFeatureExtractor(checkpoint, args.layer, device=device, max_segment_seconds=args.max_segment_seconds)
    start = time.perf_counter()
    a = whole.extract_cut(cut)
    t_whole = time.perf_counter() - start
    start = time.perf_counter()
    b = split.extract_cut(cut)
    t_split = time.perf_counter() - start
    err = np.abs(a - b)
    print(f"\n{device}: one {args.long_seconds:g} s recording, whole vs windows of {args.max_segment_seconds:g} s "
          f"({len(split.windows.split(int(cut.duration * SAMPLING_RATE)))} windows, 2 x {split.context_seconds:g} s "
          f"context)\n| frames | whole s | windows s | max abs diff | mean abs diff | feature std |\n"
          f"|---:|---:|---:|---:|---:|---:|\n| {a.shape[0]} / {b.shape[0]} | {t_whole:.2f} | {t_split:.2f} "
          f"| {err.max():.2e} | {err.mean():.2e} | {a.std():.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wav2vec2_base", help="factory of w2v.models (random weights)")
    p.add_argument("--checkpoint", type=Path, help="a real checkpoint instead of --model")
    p.add_argument("--layer", type=int, default=12)
    p.add_argument("--num-cuts", type=int, default=20)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--threads", default="1,2", help="comma list (CPU)")
    p.add_argument("--batch-durations", default="100", help="comma list of --batch-duration values")
    p.add_argument("--paddings", default="0.05,0.25", help="comma list of --max-padding values")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs of each")
    p.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16")
    p.add_argument("--long-seconds", type=float, default=0.0)
    p.add_argument("--max-segment-seconds", type=float, default=30.0)
    p.add_argument("--cpu", action="store_true", help="skip CUDA even when available")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = tmp / f"{args.model}.pt"
            models.save_checkpoint(getattr(models, args.model)().eval(), checkpoint)
        rng = np.random.default_rng(0)
        durations = rng.uniform(args.min_seconds, args.max_seconds, args.num_cuts).round(2).tolist()
        (tmp / "cuts").mkdir()
        (tmp / "long").mkdir()
        cuts = synthetic_cuts(tmp / "cuts", durations)
        print(f"{args.checkpoint or args.model}, layer {args.layer}; torch {torch.__version__}")
        compare(args, checkpoint, "cpu", [int(t) for t in args.threads.split(",")], cuts, tmp)
        if args.long_seconds:
            long_recording(args, checkpoint, "cpu", tmp)
        if torch.cuda.is_available() and not args.cpu:
            compare(args, checkpoint, "cuda", [1], cuts, tmp)
            if args.long_seconds:
                long_recording(args, checkpoint, "cuda", tmp)


if __name__ == "__main__":
    main()
