"""What bf16 extraction (and lilcom storage) changes in SSL features, their speed, and the WER of
one CTC model trained on fp32 features, side by side.

Usage:
  python bench/bench_ssl_features.py --checkpoint egs/librispeech/exp/ssl_wav2vec2 --layer 2 \
      --cuts egs/librispeech/data/fbank/librispeech_cuts_test-clean.jsonl.gz --threads 1,2 \
      [--exp-dir egs/librispeech/exp/ctc_ssl_wav2vec2_L2 --epoch 25 --avg 3 \
       --lang-dir egs/librispeech/data/lang_bpe_50 --lm-dir egs/librispeech/data/lm \
       --methods ctc-greedy-search,1best,whole-lattice-rescoring --lm-scale 0.3]

Every cut is encoded alone in fp32 and under bf16 autocast (same weights); the printed errors are
over all frames of all cuts, relative to the fp32 features' standard deviation. lilcom is the
round trip through lhotse's LilcomChunkyWriter (the compressed storage option). With --exp-dir,
the recipe's model decodes the fp32, bf16 and lilcom features of the same cuts: the difference is
the precision / storage alone, not another training run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lhotse import CutSet, LilcomChunkyWriter  # noqa: E402
from lhotse.features.io import LilcomChunkyReader  # noqa: E402

from w2v.features.ssl import SslFeatureExtractor  # noqa: E402


def extract_all(extractor: SslFeatureExtractor, cuts: list, threads: int) -> tuple[dict, float]:
    torch.set_num_threads(threads)
    extractor.extract_cut(cuts[0])  # warm-up (oneDNN primitive creation)
    start = time.perf_counter()
    feats = {c.id: extractor.extract_cut(c) for c in cuts}
    return feats, time.perf_counter() - start


def lilcom_round_trip(feats: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "feats"
        with LilcomChunkyWriter(path) as w:
            # lilcom 1.8's compress quantises its input in place: hand it copies.
            keys = {k: w.write(k, v.copy()) for k, v in feats.items()}
            stored = w.storage_path
        reader = LilcomChunkyReader(stored)
        return {k: reader.read(key) for k, key in keys.items()}


def errors(ref: dict, other: dict) -> tuple[float, float, float]:
    """(max abs error, mean abs error, fp32 std) over every frame."""
    a = np.concatenate([ref[k] for k in ref])
    b = np.concatenate([other[k] for k in ref])
    err = np.abs(a - b)
    return float(err.max()), float(err.mean()), float(a.std())


def word_error_rates(args, cuts: list, feature_sets: dict[str, dict]) -> dict[str, dict[str, float]]:
    from w2v.asr.checkpoint import load_averaged
    from w2v.asr.data import cut_text
    from w2v.decode.ctc import Batch, SearchOptions, decode_dataset, load_graphs
    from w2v.scoring.wer import error_stats

    model, cfg = load_averaged(args.exp_dir, args.epoch, args.avg)
    dim = next(iter(next(iter(feature_sets.values())).values())).shape[1]
    if dim != cfg.feature_dim:
        raise SystemExit(f"{args.exp_dir} takes {cfg.feature_dim}-dim features; layer {args.layer} has {dim}")
    methods = args.methods.split(",")
    graphs = load_graphs(args.lang_dir, methods, args.lm_dir)
    opts = SearchOptions(lm_scales=(args.lm_scale,))
    metric = "wer" if (args.lang_dir / "bpe.model").exists() else "cer"
    out = {}
    for name, feats in feature_sets.items():

        def batches():
            with torch.no_grad():
                for c in cuts:
                    x = torch.from_numpy(feats[c.id])[None]
                    lp, n = model(x, torch.tensor([x.shape[1]]))
                    yield Batch(lp, n, [cut_text(c)], [c.id])

        hyps = decode_dataset(batches(), methods, graphs, opts, log_every=0)
        out[name] = {
            f"{m}{'' if k == m else '/' + k}": error_stats(r, metric)[0].rate
            for m, per_key in hyps.items() for k, r in per_key.items()
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--cuts", type=Path, required=True, help="cuts with audio (e.g. the fbank cuts)")
    p.add_argument("--threads", default="1", help="comma list")
    p.add_argument("--max-cuts", type=int, default=0)
    p.add_argument("--exp-dir", type=Path)
    p.add_argument("--epoch", type=int)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--lang-dir", type=Path)
    p.add_argument("--lm-dir", type=Path)
    p.add_argument("--methods", default="ctc-greedy-search,1best")
    p.add_argument("--lm-scale", type=float, default=0.3)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cuts = list(CutSet.from_file(args.cuts))
    if args.max_cuts:
        cuts = cuts[: args.max_cuts]
    audio_s = sum(c.duration for c in cuts)
    ex32 = SslFeatureExtractor(args.checkpoint, args.layer)
    ex16 = SslFeatureExtractor(args.checkpoint, args.layer, bf16=True)
    print(f"{ex32.checkpoint} ({ex32.kind}), layer {args.layer} of {ex32.num_layers}, "
          f"{ex32.feature_dim}-dim; {len(cuts)} cuts, {audio_s:.1f} s of audio")

    print("\n| threads | fp32 s | bf16 s | bf16 / fp32 |\n|---:|---:|---:|---:|")
    fp32 = bf16 = None
    for threads in [int(t) for t in args.threads.split(",")]:
        fp32, t32 = extract_all(ex32, cuts, threads)
        bf16, t16 = extract_all(ex16, cuts, threads)
        print(f"| {threads} | {t32:.2f} | {t16:.2f} | {t16 / t32:.2f}× |")

    lilcom = lilcom_round_trip(fp32)
    print("\n| features | max abs err | mean abs err | mean err / std |\n|---|---:|---:|---:|")
    for name, feats in (("bf16 extraction", bf16), ("lilcom storage of fp32", lilcom)):
        mx, mean, std = errors(fp32, feats)
        print(f"| {name} | {mx:.4f} | {mean:.5f} | {mean / std:.4f} |")

    if args.exp_dir:
        rates = word_error_rates(args, cuts, {"fp32": fp32, "bf16": bf16, "lilcom": lilcom})
        keys = list(rates["fp32"])
        metric = "WER" if (args.lang_dir / "bpe.model").exists() else "CER"
        print(f"\n{metric} (%) of {args.exp_dir} epoch {args.epoch} avg {args.avg} on the same cuts:")
        print("| method | fp32 | bf16 | lilcom |\n|---|---:|---:|---:|")
        for k in keys:
            print(f"| {k} | {rates['fp32'][k]:.2f} | {rates['bf16'][k]:.2f} | {rates['lilcom'][k]:.2f} |")


if __name__ == "__main__":
    main()
