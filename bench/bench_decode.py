"""Real-time factor of the CTC searches alone (no network), one CPU thread.

Usage:
  OMP_NUM_THREADS=1 python bench/bench_decode.py [--seconds 60] [--vocab-size 500] [--words 700]
  # the output of a trained model of a recipe (network run once, not timed):
  OMP_NUM_THREADS=1 python bench/bench_decode.py --exp-dir egs/librispeech/exp/ctc_fbank --epoch 20 \
      --avg 3 --lang-dir egs/librispeech/data/lang_bpe_50 --lm-dir egs/librispeech/data/lm \
      --cuts egs/librispeech/data/fbank/librispeech_cuts_test-clean.jsonl.gz

Builds a lang dir from synthetic text (a few hundred syllable-made words, a word bigram
preference so the n-grams mean something), a BPE model, a 3-gram HLG and a 4-gram G, then
decodes peaky CTC output synthesised from held-out sentences (forced path + Gaussian noise,
40 ms frames: 10 ms features subsampled 4×) and prints RTF = search time / audio time.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import build_lang_and_graphs, peaky_log_probs  # noqa: E402
from w2v.decode.ctc import METHODS, SearchOptions, decode_log_probs, load_graphs  # noqa: E402
from w2v.lang.bpe import load_bpe  # noqa: E402
from w2v.lang.lexicon import load_fsa  # noqa: E402

FRAME_S = 0.04


def synthetic_text(num_words: int, num_sentences: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    onsets = ["", "B", "D", "F", "G", "K", "L", "M", "N", "P", "R", "S", "T", "V", "TH", "SH", "ST", "PR"]
    vowels = ["A", "E", "I", "O", "U", "EE", "OU", "AI"]
    codas = ["", "", "N", "S", "T", "R", "NG", "D"]
    vocab: set[str] = set()
    while len(vocab) < num_words:
        n = rng.choice([1, 1, 2, 2, 2, 3, 3, 4])
        vocab.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(n)))
    words = sorted(vocab)
    weights = [1.0 / (r + 1) for r in range(len(words))]  # Zipf
    follow = {w: rng.sample(words, 8) for w in words}  # each word prefers a few successors
    sentences = []
    for _ in range(num_sentences):
        w = rng.choices(words, weights)[0]
        sent = [w]
        for _ in range(rng.randint(4, 18)):
            w = rng.choice(follow[w]) if rng.random() < 0.6 else rng.choices(words, weights)[0]
            sent.append(w)
        sentences.append(" ".join(sent))
    return sentences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="audio to decode")
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--words", type=int, default=700)
    p.add_argument("--noise", type=float, default=4.0, help="std of the background logits")
    p.add_argument("--peak", type=float, default=30.0, help="path label logit over the background")
    p.add_argument("--confusable", type=int, default=3, help="near-winner classes per frame")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--lm-scales", default="0.3,0.5,0.7,0.9,1.1,1.3,1.5,1.7,1.9")
    p.add_argument("--exp-dir", type=Path, help="decode a trained model's output instead")
    p.add_argument("--epoch", type=int)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--lang-dir", type=Path)
    p.add_argument("--lm-dir", type=Path)
    p.add_argument("--cuts", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    if args.exp_dir is not None:
        _bench_model(args)
        return

    text = synthetic_text(args.words, 6000, seed=0)
    train, held_out = text[:5000], text[5000:]
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        _bench(args, Path(tmp), train, held_out)


def _bench(args: argparse.Namespace, work: Path, train: list[str], held_out: list[str]) -> None:
    t0 = time.perf_counter()
    lang_dir, lm_dir = build_lang_and_graphs(work, train, vocab_size=args.vocab_size)
    build_s = time.perf_counter() - t0
    methods = args.methods.split(",")
    graphs = load_graphs(lang_dir, methods, lm_dir)
    HLG = load_fsa(lang_dir / "HLG.pt")
    sp = load_bpe(lang_dir / "bpe.model")

    # held-out sentences until the audio budget is spent. One frame per token and 5 blanks
    # after it: ~4 tokens/s, LibriSpeech's rate for 500 BPE pieces (~2.7 words/s).
    blanks = 5
    utts, frames = [], 0
    for s in held_out:
        ids = sp.encode(s)
        frames += (1 + blanks) * len(ids) + blanks
        utts.append(ids)
        if frames * FRAME_S >= args.seconds:
            break
    batches = []
    for i in range(0, len(utts), args.batch_size):
        lp, ln = peaky_log_probs(utts[i:i + args.batch_size], sp.get_piece_size(), frames_per_token=1,
                                 blanks_between=blanks, peak=args.peak, noise=args.noise, seed=i,
                                 num_confusable=args.confusable)
        batches.append((lp, ln))
    audio_s = sum(int(ln.sum()) for _, ln in batches) * FRAME_S
    opts = SearchOptions(lm_scales=tuple(float(s) for s in args.lm_scales.split(",")))

    print(f"graphs built in {build_s:.1f} s: {args.words} words, {args.vocab_size} BPE, "
          f"HLG {HLG.shape[0]} states / {HLG.num_arcs} arcs (3-gram), 4-gram G {graphs.G.num_arcs if graphs.G is not None else 0} arcs")
    print(f"audio: {len(utts)} utterances, {audio_s:.1f} s ({audio_s / FRAME_S:.0f} frames of 40 ms), "
          f"batch {args.batch_size}, 1 thread; lm scales: {len(opts.lm_scales)}")
    top = torch.cat([lp[b, : ln[b]] for lp, ln in batches for b in range(len(ln))]).sort(-1, descending=True).values
    print(f"output: mean top-1 prob {top[:, 0].exp().mean():.3f}, mean log-prob of 2nd {top[:, 1].mean():.1f}, "
          f"10th {top[:, 9].mean():.1f}, median class {top[:, top.shape[1] // 2].mean():.1f}")
    refs = [sp.decode(u).split() for u in utts]
    _time_methods(batches, refs, graphs, opts, methods, audio_s)


def _bench_model(args: argparse.Namespace) -> None:
    from lhotse import CutSet

    from w2v.asr.checkpoint import load_averaged
    from w2v.asr.data import make_dataloader

    model, _ = load_averaged(args.exp_dir, args.epoch, args.avg)
    methods = args.methods.split(",")
    graphs = load_graphs(args.lang_dir, methods, args.lm_dir)
    batches, refs = [], []
    with torch.no_grad():
        for b in make_dataloader(CutSet.from_file(args.cuts), train=False, max_duration=60):
            batches.append(model(b["features"], b["feature_lens"]))
            refs += [t.split() for t in b["texts"]]
    audio_s = sum(int(ln.sum()) for _, ln in batches) * FRAME_S
    print(f"{args.exp_dir} epoch {args.epoch} avg {args.avg} on {args.cuts.name}: {len(refs)} utterances, "
          f"{audio_s:.1f} s of network output (40 ms frames), 1 thread")
    opts = SearchOptions(lm_scales=tuple(float(s) for s in args.lm_scales.split(",")))
    _time_methods(batches, refs, graphs, opts, methods, audio_s)


def _time_methods(batches, refs, graphs, opts: SearchOptions, methods: list[str], audio_s: float) -> None:
    def run(method: str, o: SearchOptions) -> tuple[float, float]:
        hyps: list[list[str]] = []
        start = time.perf_counter()
        for lp, ln in batches:
            out = decode_log_probs(lp, ln, [method], graphs, o)[method]
            hyps += out[min(out)]  # one key is enough for the error count
        dt = time.perf_counter() - start
        errors = sum(_edit_distance(r, h) for r, h in zip(refs, hyps))
        return dt, 100.0 * errors / sum(len(r) for r in refs)

    print(f"\nicefall defaults (search_beam 20, output_beam 8, active states 30..10000)")
    print(f"{'method':<26} {'search s':>9} {'RTF':>8} {'WER %':>6}")
    for method in methods:
        dt, wer = run(method, opts)
        print(f"{method:<26} {dt:9.3f} {dt / audio_s:8.4f} {wer:6.2f}")

    print(f"\n1best, other search settings")
    print(f"{'beam':>5} {'active':>10} {'blank skip':>10} {'search s':>9} {'RTF':>8} {'WER %':>6}")
    for beam, min_active, max_active, skip in [(20, 1, 10000, None), (20, 1, 10000, 0.999),
                                               (15, 30, 10000, None), (10, 30, 1000, None)]:
        o = replace(opts, search_beam=beam, min_active_states=min_active, max_active_states=max_active,
                    blank_skip_threshold=skip)
        dt, wer = run("1best", o)
        print(f"{beam:5.0f} {f'{min_active}..{max_active}':>10} {str(skip):>10} {dt:9.3f} "
              f"{dt / audio_s:8.4f} {wer:6.2f}")
    print("(each lattice method times its own HLG intersection)")


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    import kaldialign

    return sum(r != h for r, h in kaldialign.align(ref, hyp, "*"))


if __name__ == "__main__":
    main()
