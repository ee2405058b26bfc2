"""Peak memory of the CTC searches, with the decoding bounds of SearchOptions and without them.

Usage:
  # checkpoints of a recipe: an early and a late one, on a test set (network run once, not measured)
  python bench/bench_decode_memory.py --exp-dir egs/librispeech/exp/ctc_fbank --checkpoint 2:1 \
      --checkpoint 25:3 --lang-dir egs/librispeech/data/lang_bpe_50 --lm-dir egs/librispeech/data/lm \
      --cuts egs/librispeech/data/fbank/librispeech_cuts_test-clean.jsonl.gz
  # no recipe: a synthetic lang dir, peaky (trained-like) and uniform (flat) output
  python bench/bench_decode_memory.py [--seconds 60] [--vocab-size 500]

Each configuration decodes in a child process of its own, under an address-space limit
(--limit-gb), with every method of --methods on every batch (as w2v.bin.decode does); the child's
peak RSS comes from the kernel. "off" switches the bounds off (search_frames, max_arcs_per_frame,
max_product_arcs, max_step_mb = None); lattices still keep only their arcs on complete paths. A run that
fails (out of memory under the limit) is reported with its error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from w2v.decode.ctc import METHODS, SearchOptions, decode_log_probs, load_graphs  # noqa: E402

FRAME_S = 0.04
BOUNDS_OFF = dict(search_frames=None, max_arcs_per_frame=None, max_product_arcs=None, max_step_mb=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, help="decode checkpoints of this experiment")
    p.add_argument("--checkpoint", action="append", default=[], help="EPOCH:AVG, repeatable")
    p.add_argument("--lang-dir", type=Path)
    p.add_argument("--lm-dir", type=Path)
    p.add_argument("--cuts", type=Path)
    p.add_argument("--max-duration", type=float, default=400.0, help="seconds per batch (stage 10's)")
    p.add_argument("--seconds", type=float, default=60.0, help="synthetic mode: audio per output kind")
    p.add_argument("--vocab-size", type=int, default=500, help="synthetic mode: BPE pieces")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--lm-scales", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    p.add_argument("--limit-gb", type=float, default=10.0, help="address-space limit of each child")
    p.add_argument("--child", nargs=2, metavar=("OUTPUTS", "BOUNDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args, Path(args.child[0]), args.child[1])
        return
    with tempfile.TemporaryDirectory(prefix="bench_decode_memory_") as tmp:
        tmp = Path(tmp)
        outputs = _model_outputs(args, tmp) if args.exp_dir else _synthetic_outputs(args, tmp)
        print(f"methods: {args.methods}; lm scales: {len(args.lm_scales.split(','))}; 1 thread; "
              f"each run limited to {args.limit_gb:g} GB of address space")
        print(f"{'output':<22} {'bounds':<6} {'peak RSS MB':>11} {'graphs MB':>9} {'decode s':>8} "
              f"{'RTF':>6} {'warnings':>8}  status")
        for name, path, audio_s in outputs:
            for bounds in ("on", "off"):
                _run_child(args, name, path, audio_s, bounds)


def _model_outputs(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path, float]]:
    from lhotse import CutSet

    from w2v.asr.checkpoint import load_averaged
    from w2v.asr.data import make_dataloader, model_inputs

    if not args.checkpoint or args.lang_dir is None or args.cuts is None:
        sys.exit("--exp-dir needs --checkpoint, --lang-dir and --cuts")
    out = []
    for spec in args.checkpoint:
        epoch, avg = (int(x) for x in spec.split(":"))
        model, _ = load_averaged(args.exp_dir, epoch, avg)
        batches = []
        with torch.no_grad():
            for b in make_dataloader(CutSet.from_file(args.cuts), train=False, max_duration=args.max_duration):
                lp, ln = model(*model_inputs(b))
                batches.append((lp, ln, list(b["cut_ids"])))
        path = tmp / f"epoch{epoch}_avg{avg}.pt"
        torch.save(batches, path)
        audio_s = sum(int(ln.sum()) for _, ln, _ in batches) * FRAME_S
        out.append((f"epoch {epoch} avg {avg}", path, audio_s))
        print(f"{args.exp_dir} epoch {epoch} avg {avg} on {args.cuts.name}: {len(batches)} batches, "
              f"{audio_s:.1f} s of network output (40 ms frames)")
    return out


def _synthetic_outputs(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path, float]]:
    from bench_decode import synthetic_text

    from tests.helpers import build_lang_and_graphs, peaky_log_probs
    from w2v.lang.bpe import load_bpe

    text = synthetic_text(700, 6000, seed=0)
    args.lang_dir, args.lm_dir = build_lang_and_graphs(tmp, text[:5000], vocab_size=args.vocab_size)
    sp = load_bpe(args.lang_dir / "bpe.model")
    V = sp.get_piece_size()
    batch_frames = int(args.max_duration / FRAME_S)
    peaky, flat, frames = [], [], 0
    utts = [sp.encode(s) for s in text[5000:]]
    i = 0
    while frames * FRAME_S < args.seconds:
        batch, n = [], 0
        while n < batch_frames and frames * FRAME_S < args.seconds:
            batch.append(utts[i % len(utts)])
            n += 6 * len(utts[i % len(utts)]) + 5
            frames += 6 * len(utts[i % len(utts)]) + 5
            i += 1
        lp, ln = peaky_log_probs(batch, V, frames_per_token=1, blanks_between=5, peak=30.0, noise=4.0,
                                 seed=i, num_confusable=3)
        ids = [f"utt-{i - len(batch) + k}" for k in range(len(batch))]
        peaky.append((lp, ln, ids))
        flat.append((torch.full_like(lp, -float(torch.log(torch.tensor(float(V))))), ln, ids))
    out = []
    for name, batches in (("peaky (trained-like)", peaky), ("uniform (flat)", flat)):
        path = tmp / f"{name.split()[0]}.pt"
        torch.save(batches, path)
        out.append((name, path, frames * FRAME_S))
    print(f"synthetic lang dir: 700 words, {V} BPE pieces; {frames * FRAME_S:.1f} s of output per kind, "
          f"batches of {args.max_duration:g} s")
    return out


def _run_child(args: argparse.Namespace, name: str, path: Path, audio_s: float, bounds: str) -> None:
    limit = int(args.limit_gb * 2**30)
    cmd = [sys.executable, __file__, "--child", str(path), bounds, "--lang-dir", str(args.lang_dir),
           "--methods", args.methods, "--lm-scales", args.lm_scales]
    if args.lm_dir is not None:
        cmd += ["--lm-dir", str(args.lm_dir)]

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, preexec_fn=set_limit, stdout=out, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        errors = [ln for ln in err.read().decode().strip().splitlines() if ln.strip()]
    peak_mb = usage.ru_maxrss / 1024
    if proc.returncode == 0 and lines:
        r = json.loads(lines[-1])
        print(f"{name:<22} {bounds:<6} {peak_mb:11.0f} {r['graphs_mb']:9.0f} {r['seconds']:8.1f} "
              f"{r['seconds'] / audio_s:6.3f} {r['warnings']:8d}  ok", flush=True)
    else:
        why = errors[-1][:110] if errors else f"exit status {proc.returncode}"
        print(f"{name:<22} {bounds:<6} {peak_mb:11.0f} {'':>9} {'':>8} {'':>6} {'':>8}  failed: {why}",
              flush=True)


def _child(args: argparse.Namespace, outputs: Path, bounds: str) -> None:
    torch.set_num_threads(1)
    warnings = []
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger().addHandler(_Counter(warnings))
    methods = args.methods.split(",")
    graphs = load_graphs(args.lang_dir, methods, args.lm_dir)
    graphs_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    opts = SearchOptions(lm_scales=tuple(float(s) for s in args.lm_scales.split(",")),
                         **(BOUNDS_OFF if bounds == "off" else {}))
    start = time.perf_counter()
    for lp, ln, ids in torch.load(outputs):
        decode_log_probs(lp, ln, methods, graphs, opts, ids)
    print(json.dumps({"seconds": time.perf_counter() - start, "warnings": len(warnings),
                      "graphs_mb": graphs_mb}))


class _Counter(logging.Handler):
    def __init__(self, sink: list) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


if __name__ == "__main__":
    main()
