"""k2's CTC loss (the training default) side by side with torch's: agreement and time.

Usage:
  OMP_NUM_THREADS=1 python bench/bench_ctc.py [--batch 8] [--frames 200] [--tokens 500] [--repeats 5]

Forward + backward of both losses (``w2v.asr.ctc.ctc_loss``, impl "k2" and "torch") on random
log-probs (flat, the worst case for k2's pruning) and on peaked ones (as a trained model's):
median seconds per call, the k2/torch ratio, and the largest absolute / relative difference of the
per-utterance losses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from w2v.asr.ctc import ctc_loss  # noqa: E402


def batch(size: int, frames: int, tokens: int, peaked: bool, seed: int = 0):
    """Log-probs ``[size, frames, tokens]``, lengths ``[size]`` and targets of a quarter of the frames."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(size, frames, tokens, generator=g) * (6.0 if peaked else 1.0)
    lengths = torch.randint(frames // 2, frames + 1, (size,), generator=g)
    targets = [torch.randint(1, tokens, (max(1, int(n) // 4),), generator=g).tolist() for n in lengths]
    return logits.log_softmax(-1), lengths, targets


def compare(log_probs: torch.Tensor, lengths: torch.Tensor, targets, repeats: int) -> dict[str, float]:
    """Median seconds of forward + backward per implementation, and the largest differences."""
    seconds: dict[str, list[float]] = {"k2": [], "torch": []}
    values = {}
    for _ in range(repeats):
        for impl in seconds:  # interleaved: a load change on a shared machine hits both
            x = log_probs.detach().clone().requires_grad_(True)
            start = time.perf_counter()
            loss = ctc_loss(x, lengths, targets, impl)
            loss.sum().backward()
            seconds[impl].append(time.perf_counter() - start)
            values[impl] = loss.detach().double()
    diff = (values["k2"] - values["torch"]).abs()
    return {
        "k2": statistics.median(seconds["k2"]),
        "torch": statistics.median(seconds["torch"]),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / values["torch"].abs().clamp(min=1e-8)).max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=200, help="output frames (40 ms each)")
    p.add_argument("--tokens", type=int, default=500, help="vocabulary V, blank included")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"CTC loss forward + backward, {args.batch} x {args.frames} frames x {args.tokens} tokens, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'posteriors':<11} {'k2 s':>8} {'torch s':>8} {'k2/torch':>9} {'max abs diff':>13} {'max rel diff':>13}")
    for peaked in (False, True):
        r = compare(*batch(args.batch, args.frames, args.tokens, peaked), repeats=args.repeats)
        print(f"{'peaked' if peaked else 'random':<11} {r['k2']:8.4f} {r['torch']:8.4f} {r['k2'] / r['torch']:8.2f}x "
              f"{r['max_abs_diff']:13.2e} {r['max_rel_diff']:13.2e}")


if __name__ == "__main__":
    main()
