"""Decode test sets with a trained CTC model and score them.

Usage:
  python -m w2v.bin.decode --exp-dir exp/ctc --epoch 30 --avg 5 \
      --lang-dir data/lang_bpe_500 --lm-dir data/lm \
      --cuts data/fbank/librispeech_cuts_test-clean.jsonl.gz \
      --cuts data/fbank/librispeech_cuts_test-other.jsonl.gz \
      --decoding-method ctc-greedy-search,ctc-decoding,1best,whole-lattice-rescoring \
      --feature-type fbank --max-duration 300 --lm-scales 0.3,0.5,0.7

The model is the average of epoch-(epoch-avg+1).pt .. epoch-<epoch>.pt in --exp-dir, or the file
--checkpoint names (e.g. exp/ctc/pretrained-epoch-30-avg-5.pt from w2v.bin.export_model; --epoch
and --avg then only label the results). The network runs once per test set; every method then
searches its output. Writes <exp-dir>/<method>/{recogs,errs,wer-summary}-<test>-<key>-epoch-E-avg-A.txt,
updates <exp-dir>/results.json and RESULTS.md (rows keyed by checkpoint too), and prints the
table. Mandarin lang dirs (no bpe.model) are scored by CER.

The network runs on --device (auto: a GPU when there is one); the lattice search on the CPU.
A recording longer than --max-cut-seconds is decoded in consecutive windows of that length
(lhotse's cut_into_windows) whose hypotheses are joined in order and scored against the whole
transcript, so memory stays bounded whatever the recording's length (a word cut by a window
boundary can cost an error). Under torchrun (2 processes: torchrun --nproc-per-node 2 -m
w2v.bin.decode ...) each process decodes a share of the batches and rank 0 scores them all.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Iterable, Iterator

import torch

from w2v.asr.data import model_inputs
from w2v.decode.attention import ATTENTION_METHODS, AttentionOptions, decode_attention
from w2v.decode.ctc import (
    DEFAULT_LM_SCALES,
    METHODS,
    NEEDS_HLG,
    Batch,
    DecodingGraphs,
    SearchOptions,
    decode_log_probs,
    load_graphs,
)
from w2v.lang.symbols import read_symbol_table
from w2v.scoring.report import format_table, report_decoding
from w2v.utils import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="decode this checkpoint file instead of averaging epochs of --exp-dir")
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--lm-dir", type=Path, default=None, help="holds G_4_gram.pt for rescoring")
    p.add_argument("--cuts", type=Path, action="append", required=True,
                   help="test cuts; repeatable; the test set is named after the file")
    p.add_argument("--decoding-method", action="append", required=True,
                   help=f"repeatable or comma separated: {', '.join(METHODS + ATTENTION_METHODS)}")
    p.add_argument("--feature-type", default="fbank")
    p.add_argument("--label-budget", default="all",
                   help="the transcribed training audio the model saw (10m, 1h, all, ...): a label in results.json")
    p.add_argument("--train-cuts", type=Path, nargs="*", default=[],
                   help="the cuts the model trained on: their minutes go into results.json (train_minutes)")
    p.add_argument("--max-duration", type=float, default=300.0)
    p.add_argument("--max-cut-seconds", type=float, default=60.0,
                   help="longer recordings are decoded in windows of this length (0: never split)")
    p.add_argument("--device", default="auto", help="where the network runs: auto | cpu | cuda | cuda:N")
    p.add_argument("--lm-scales", default=None, help="comma list; default 0.1..2.0 step 0.1")
    p.add_argument("--search-beam", type=float, default=20.0)
    p.add_argument("--output-beam", type=float, default=8.0)
    p.add_argument("--min-active-states", type=int, default=30)
    p.add_argument("--max-active-states", type=int, default=10000)
    p.add_argument("--num-paths", type=int, default=100)
    p.add_argument("--nbest-scale", type=float, default=0.5)
    p.add_argument("--blank-skip-threshold", type=float, default=None,
                   help="e.g. 0.999: shrink confident-blank runs to one frame before the search")
    # Memory bounds for output that matches nothing (early checkpoints, unseen audio); 'none' lifts one.
    bounds = SearchOptions()
    p.add_argument("--search-frames", type=_int_or_none, default=bounds.search_frames,
                   help="frames of network output per k2 search: a batch is searched a few cuts at a time")
    p.add_argument("--max-arcs-per-frame", type=_int_or_none, default=bounds.max_arcs_per_frame,
                   help="a cut's lattice beyond this many arcs per frame is pruned (with a warning)")
    p.add_argument("--max-product-arcs", type=_int_or_none, default=bounds.max_product_arcs,
                   help="arcs one n-best or whole-lattice intersection may build; a cut needing "
                        "more is pruned (with a warning) and retried")
    p.add_argument("--max-step-mb", type=_int_or_none, default=bounds.max_step_mb,
                   help="memory one n-best or whole-lattice intersection may add before it fails "
                        "and is retried smaller (Linux)")
    a = p.add_argument_group("attention decoder (models trained with --num-decoder-layers)")
    a.add_argument("--beam", type=int, default=AttentionOptions.beam,
                   help="ctc-prefix-beam-search, attention, attention-rescoring: hypotheses kept")
    a.add_argument("--attention-ctc-weight", type=float, default=AttentionOptions.ctc_weight,
                   help="attention-rescoring: decoder score + this × CTC score")
    a.add_argument("--attention-scales", default=",".join(str(s) for s in AttentionOptions.attention_scales),
                   help="attention-decoder: decoder-score weights tried (with each --lm-scales)")
    p.add_argument("--metric", choices=["auto", "wer", "cer"], default="auto",
                   help="auto: cer when the lang dir has no bpe.model")
    return p


def _int_or_none(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def parse_methods(values: Iterable[str]) -> list[str]:
    methods: list[str] = []
    for v in values:
        for m in v.split(","):
            m = m.strip()
            if m and m not in methods:
                methods.append(m)
    unknown = [m for m in methods if m not in METHODS + ATTENTION_METHODS]
    if unknown:
        raise ValueError(f"unknown decoding methods {unknown}; known: {', '.join(METHODS + ATTENTION_METHODS)}")
    return methods


def cuts_test_set_name(cuts_path: Path) -> str:
    """``librispeech_cuts_test-clean.jsonl.gz`` → ``test-clean``."""
    name = re.sub(r"\.jsonl(\.gz)?$", "", cuts_path.name)
    return name.split("_cuts_")[-1] if "_cuts_" in name else name


def split_long_cuts(cuts, max_seconds: float) -> tuple[object, dict[str, tuple[str, int]]]:
    """(cuts with each one longer than ``max_seconds`` replaced by its consecutive windows,
    window id → (original cut id, window index))."""
    from lhotse import CutSet

    if not max_seconds:
        return cuts, {}
    out, parent = [], {}
    for cut in cuts:
        if cut.duration <= max_seconds:
            out.append(cut)
            continue
        for i, window in enumerate(cut.cut_into_windows(duration=max_seconds)):
            parent[window.id] = (cut.id, i)
            out.append(window)
    return CutSet.from_cuts(out), parent


def join_windows(hyps: dict, parent: dict[str, tuple[str, int]], refs: dict[str, list[str]]) -> dict:
    """Hypotheses of windows joined into their recording's, in window order, with its whole
    transcript as the reference; other cuts as they are (method → key → [(id, ref, hyp)])."""
    if not parent:
        return hyps
    out: dict = {}
    for method, per_key in hyps.items():
        for key, results in per_key.items():
            joined: dict[str, list] = {}
            rows = []
            for cut_id, ref, hyp in results:
                if cut_id not in parent:
                    rows.append((cut_id, ref, hyp))
                    continue
                orig, i = parent[cut_id]
                if orig not in joined:
                    joined[orig] = []
                    rows.append(orig)
                joined[orig].append((i, hyp))
            out.setdefault(method, {})[key] = [
                r if isinstance(r, tuple) else
                (r, refs[r], [w for _, h in sorted(joined[r], key=lambda x: x[0]) for w in h])
                for r in rows
            ]
    return out


def gather(hyps: dict, rt) -> dict | None:
    """All processes' results on rank 0 (None elsewhere); the results themselves with one process.

    lhotse's samplers repeat cuts so that every rank gets as many batches: each cut counts once.
    """
    if rt is None or rt.world_size == 1:
        return hyps
    import torch.distributed as dist

    parts = [None] * rt.world_size
    dist.all_gather_object(parts, hyps)
    if not rt.is_main:
        return None
    out: dict = {}
    for part in parts:
        for method, per_key in part.items():
            for key, results in per_key.items():
                seen = out.setdefault(method, {}).setdefault(key, {})
                for row in results:
                    seen.setdefault(row[0], row)
    return {m: {k: list(rows.values()) for k, rows in per_key.items()} for m, per_key in out.items()}


@torch.no_grad()
def network_outputs(model, dataloader, encoder_out: bool = False) -> Iterator[Batch]:
    """Run ``model`` over ``dataloader`` batches (dicts from w2v.asr.data); with ``encoder_out``
    the batches also carry the encoder output (on the model's device) for the attention methods."""
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device = param.device if param is not None else torch.device("cpu")
    for batch in dataloader:
        inputs, lens = model_inputs(batch)
        x = None
        if encoder_out:
            x, out_lens = model.encode(inputs.to(device), lens.to(device))
            log_probs = torch.log_softmax(model.output(x), dim=-1)
        else:
            log_probs, out_lens = model(inputs.to(device), lens.to(device))
        yield Batch(log_probs.cpu(), out_lens.cpu(), list(batch["texts"]), list(batch["cut_ids"]), x)


def word_token_ids(graphs: DecodingGraphs):
    """word ids → token ids, as training encodes text: BPE pieces, or the lexicon's units."""
    token2id = {t: i for i, t in enumerate(graphs.tokens.id2token)}
    if graphs.tokens.sp is not None:
        return lambda ids: graphs.tokens.sp.encode(" ".join(graphs.words[i] for i in ids))
    from w2v.lang.lexicon import split_chars

    unk = token2id.get("<unk>", 0)
    return lambda ids: [token2id.get(u, unk) for i in ids for u in split_chars(graphs.words[i])]


def decode_batches(batches, model, methods, graphs, opts, aopts, log_every: int = 20) -> dict:
    """Every method on every :class:`Batch`: method → key → [(cut id, ref words, hyp words)]."""
    ctc = [m for m in methods if m in METHODS]
    attention = [m for m in methods if m in ATTENTION_METHODS]
    word_tokens = word_token_ids(graphs) if "attention-decoder" in attention else None
    out: dict[str, dict[str, list]] = {}
    num_cuts = 0
    for i, batch in enumerate(batches):
        hyps = decode_log_probs(batch.log_probs, batch.lengths, ctc, graphs, opts, batch.cut_ids) if ctc else {}
        if attention:
            hyps.update(decode_attention(model, batch.encoder_out, batch.lengths, batch.log_probs, attention,
                                         graphs, opts, aopts, word_tokens, batch.cut_ids))
        refs = [t.split() for t in batch.texts]
        for method, per_key in hyps.items():
            for key, h in per_key.items():
                out.setdefault(method, {}).setdefault(key, []).extend(zip(batch.cut_ids, refs, h))
        num_cuts += len(batch.cut_ids)
        if log_every and i % log_every == 0:
            logging.info("batch %d, cuts decoded: %d", i, num_cuts)
    return out


def decode_test_set(model, cuts, test_set: str, args, graphs, methods, opts, metric: str,
                    words: dict[str, int] | None = None, rt=None) -> str | None:
    """Decode and score one test set (rank 0 scores); returns the printed table."""
    from w2v.asr.data import cut_text, make_dataloader

    refs = {c.id: cut_text(c).split() for c in cuts}
    windows, parent = split_long_cuts(cuts, args.max_cut_seconds)
    if parent:
        logging.info("%s: %d recordings longer than %g s decoded in %d windows", test_set,
                     len({p for p, _ in parent.values()}), args.max_cut_seconds, len(parent))
    dataloader = make_dataloader(windows, train=False, max_duration=args.max_duration,
                                 audio=model.config.ssl is not None,
                                 world_size=rt.world_size if rt else 1, rank=rt.rank if rt else 0)
    attention = bool(set(methods) & set(ATTENTION_METHODS))
    hyps = decode_batches(network_outputs(model, dataloader, encoder_out=attention), model, methods,
                          graphs, opts, AttentionOptions(args.beam, args.attention_ctc_weight,
                                                         tuple(float(s) for s in args.attention_scales.split(","))))
    hyps = gather(hyps, rt)
    if hyps is None:  # another rank scores
        return None
    hyps = join_windows(hyps, parent, refs)
    if words is not None and hyps:
        # Words outside words.txt cannot be recognised by the HLG methods; report how many.
        first = next(iter(next(iter(hyps.values())).values()))
        ref_words = [w for _, ref, _ in first for w in ref]
        oov = sum(w not in words for w in ref_words)
        logging.info("%s: %d of %d reference words are OOV (%.2f%%), counted as errors",
                     test_set, oov, len(ref_words), 100.0 * oov / max(1, len(ref_words)))
    stats = report_decoding(
        args.exp_dir, test_set, hyps, args.feature_type, metric,
        labels={"epoch": args.epoch, "avg": args.avg, "label_budget": args.label_budget,
                **({"train_minutes": train_minutes(args.train_cuts)} if args.train_cuts else {})},
    )
    table = format_table(stats, test_set)
    print(table, flush=True)
    return table


def train_minutes(paths: list[Path]) -> float:
    """Minutes of audio in the training cuts (the label budget's size, for the reports)."""
    from lhotse import load_manifest_lazy

    return round(sum(c.duration for p in paths for c in load_manifest_lazy(p)) / 60, 2)


def check_features(cuts, cuts_path: Path, config) -> None:
    """The test cuts must hold the features the model was trained on (dim and frame shift)."""
    from w2v.asr.model import input_subsampling
    from w2v.asr.train import feature_shape

    dim, shift = feature_shape(cuts, str(cuts_path))
    if (dim, input_subsampling(config.head, shift)) != (config.feature_dim, config.subsampling):
        raise ValueError(
            f"{cuts_path}: {dim}-dim features at {shift * 1000:g} ms, but the model takes "
            f"{config.feature_dim}-dim features subsampled ×{config.subsampling}: decode with the "
            f"cuts of the feature type it was trained on"
        )


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging()
    methods = parse_methods(args.decoding_method)
    lm_scales = (tuple(float(s) for s in args.lm_scales.split(",")) if args.lm_scales
                 else DEFAULT_LM_SCALES)
    opts = SearchOptions(
        search_beam=args.search_beam, output_beam=args.output_beam,
        min_active_states=args.min_active_states, max_active_states=args.max_active_states,
        num_paths=args.num_paths, nbest_scale=args.nbest_scale, lm_scales=lm_scales,
        blank_skip_threshold=args.blank_skip_threshold, search_frames=args.search_frames,
        max_arcs_per_frame=args.max_arcs_per_frame, max_product_arcs=args.max_product_arcs,
        max_step_mb=args.max_step_mb,
    )
    metric = args.metric
    if metric == "auto":
        metric = "wer" if (args.lang_dir / "bpe.model").exists() else "cer"

    from lhotse import CutSet

    from w2v.asr.checkpoint import load_averaged, load_checkpoint
    from w2v.runtime.context import init_runtime

    rt = init_runtime(args.device)
    if args.checkpoint is not None:
        logging.info("Loading %s (epoch %d avg %d)", args.checkpoint, args.epoch, args.avg)
        model, _config = load_checkpoint(args.checkpoint)
    else:
        logging.info("Loading %s epoch %d avg %d", args.exp_dir, args.epoch, args.avg)
        model, _config = load_averaged(args.exp_dir, args.epoch, args.avg)
    model.eval().to(rt.device)
    logging.info("Loading graphs for %s from %s", methods, args.lang_dir)
    # the attention methods need no graph, except attention-decoder (the HLG n-best)
    graphs = load_graphs(args.lang_dir, [m for m in methods if m in METHODS or m in NEEDS_HLG],
                         args.lm_dir, device=rt.device)
    words = read_symbol_table(args.lang_dir / "words.txt")
    for cuts_path in args.cuts:
        test_set = cuts_test_set_name(cuts_path)
        logging.info("Decoding %s (%s) with %s", test_set, cuts_path, ", ".join(methods))
        cuts = CutSet.from_file(cuts_path)
        if _config.ssl is None:  # else the model has its own SSL front end: it reads audio
            check_features(cuts, cuts_path, _config)
        decode_test_set(model, cuts, test_set, args, graphs, methods, opts, metric, words, rt)
    rt.close()


if __name__ == "__main__":
    main()
