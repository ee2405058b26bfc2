"""Peak memory of decoding one long recording (1, 6, 30 minutes), in windows and whole.

Usage:
  python bench/bench_decode_long.py [--minutes 1,6,30] [--methods ctc-greedy-search,1best]
      [--checkpoint exp/ctc_fbank/pretrained-epoch-25-avg-3.pt --lang-dir data/lang_bpe_50]

Each run is `python -m w2v.bin.decode` in a child process under an address-space limit
(--limit-gb), with stage 10's --max-duration 400; its peak RSS comes from the kernel. "windows" is the default --max-cut-seconds 60,
"whole" is --max-cut-seconds 0 (the whole recording through the network and the search at
once). Without --checkpoint the model is the demo-size conformer (2.2M parameters) with random
weights on a toy BPE lang dir, and the features are random 80-dim fbank-like frames: the memory
of the network and of the search, not a WER. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lhotse import CutSet, Features, MonoCut, NumpyFilesWriter, SupervisionSegment  # noqa: E402

from w2v.asr.model import KIND, AsrConfig, build_model  # noqa: E402
from w2v.lang.symbols import read_symbol_table  # noqa: E402
from w2v.utils import atomic_torch_save  # noqa: E402


def long_cut(storage: Path, minutes: float, dim: int = 80, shift: float = 0.01) -> MonoCut:
    frames = int(minutes * 60 / shift)
    feats = np.random.default_rng(0).standard_normal((frames, dim)).astype(np.float32)
    with NumpyFilesWriter(storage) as writer:
        key = writer.write(f"long{minutes:g}", feats)
    cid = f"long-{minutes:g}min"
    duration = frames * shift
    features = Features(type="fbank", num_frames=frames, num_features=dim, frame_shift=shift,
                        sampling_rate=16000, start=0.0, duration=duration, storage_type=writer.name,
                        storage_path=str(storage), storage_key=key)
    sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=duration, text="THE CAT SAT")
    return MonoCut(id=cid, start=0.0, duration=duration, channel=0, features=features, supervisions=[sup])


def toy_model(tmp: Path) -> tuple[Path, Path, Path]:
    from tests.helpers import TOY_SENTENCES, build_lang_and_graphs

    lang, lm = build_lang_and_graphs(tmp, TOY_SENTENCES, vocab_size=30)
    tokens = read_symbol_table(lang / "tokens.txt")
    config = AsrConfig(num_tokens=sum(not t.startswith("#") for t in tokens))
    torch.manual_seed(0)
    ckpt = tmp / "random-demo-model.pt"
    atomic_torch_save({"model": build_model(config).state_dict(), "config": asdict(config), "kind": KIND}, ckpt)
    return ckpt, lang, lm


def run(args, ckpt: Path, lang: Path, lm: Path | None, cuts: Path, exp: Path, max_cut: float) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "w2v.bin.decode", "--exp-dir", str(exp), "--epoch", "1", "--checkpoint",
           str(ckpt), "--lang-dir", str(lang), "--cuts", str(cuts), "--decoding-method", args.methods,
           "--max-cut-seconds", str(max_cut), "--max-duration", "400", "--device", "cpu"]
    if lm is not None:
        cmd += ["--lm-dir", str(lm)]
    limit = int(args.limit_gb * 2**30)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
                                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        _, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        lines = [ln for ln in err.read().decode().splitlines() if ln.strip()]
    ok = os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024, time.perf_counter() - start, "ok" if ok else f"failed: {lines[-1][:90] if lines else status}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", default="1,6,30")
    p.add_argument("--methods", default="ctc-greedy-search,1best")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--lang-dir", type=Path)
    p.add_argument("--lm-dir", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit-gb", type=float, default=12.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_decode_long_") as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            ckpt, lang, lm = args.checkpoint, args.lang_dir, args.lm_dir
        else:
            ckpt, lang, lm = toy_model(tmp)
        print(f"model {ckpt.name}; methods {args.methods}; {args.threads} thread(s); "
              f"limit {args.limit_gb:g} GB of address space per run")
        print(f"{'minutes':>7} {'decoding':<8} {'peak RSS MB':>11} {'seconds':>8}  status")
        for minutes in (float(m) for m in args.minutes.split(",")):
            cuts = tmp / f"long_cuts_test-{minutes:g}.jsonl.gz"
            CutSet.from_cuts([long_cut(tmp / f"feats{minutes:g}", minutes)]).to_file(cuts)
            for name, max_cut in (("windows", 60.0), ("whole", 0.0)):
                rss, seconds, status = run(args, ckpt, lang, lm, cuts, tmp / f"exp-{minutes:g}-{name}", max_cut)
                print(f"{minutes:7g} {name:<8} {rss:11.0f} {seconds:8.1f}  {status}", flush=True)


if __name__ == "__main__":
    main()
