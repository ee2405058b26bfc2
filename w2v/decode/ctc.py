"""CTC decoding methods over network output, by their icefall names.

Every method takes ``log_probs [B, T, V]`` (log-softmax, blank = 0) and ``lengths [B]`` (valid
frames) and returns ``{key: hyps}``, ``hyps[b]`` the word list of utterance ``b`` in input order.
Keys: the method name, or ``lm_scale_<s>`` for the rescoring sweeps.

All FSAs live on the CPU (k2 CPU build).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import k2
import torch

from w2v.lang.lexicon import load_fsa, max_token_id, read_symbol_table

METHODS = (
    "ctc-greedy-search",
    "ctc-decoding",
    "1best",
    "nbest",
    "nbest-rescoring",
    "whole-lattice-rescoring",
)
NEEDS_HLG = {"1best", "nbest", "nbest-rescoring", "whole-lattice-rescoring"}
NEEDS_G = {"nbest-rescoring", "whole-lattice-rescoring"}
DEFAULT_LM_SCALES = tuple(round(0.1 * i, 1) for i in range(1, 21))  # 0.1 .. 2.0


@dataclass
class SearchOptions:
    """k2 search settings (icefall's defaults) and the n-best / rescoring knobs.

    Beams are in nats. ``num_paths`` paths are sampled per utterance for the n-best methods,
    with lattice scores multiplied by ``nbest_scale`` while sampling.
    """

    search_beam: float = 20.0
    output_beam: float = 8.0
    min_active_states: int = 30
    max_active_states: int = 10000
    num_paths: int = 100
    nbest_scale: float = 0.5
    lm_scales: Sequence[float] = DEFAULT_LM_SCALES
    # Off (None) by default, as in icefall's CTC decoding. When set, runs of frames whose blank
    # probability exceeds it shrink to their first frame before the lattice search (icefall's
    # FrameReducer idea); one frame is kept so repeated tokens stay separated.
    blank_skip_threshold: float | None = None


# --------------------------------------------------------------------------- token ↔ text


@dataclass
class TokenDecoder:
    """Turns token-id sequences into words: sentencepiece for BPE, concatenation for chars."""

    id2token: list[str]
    sp: object | None = None  # sentencepiece processor when BPE

    def words(self, ids: Sequence[int]) -> list[str]:
        ids = [int(i) for i in ids if 0 < int(i) < len(self.id2token)]
        if self.sp is not None:
            return self.sp.decode(ids).split()
        # Characters carry no word boundaries; CER scoring splits words into characters anyway.
        return ["".join(self.id2token[i] for i in ids)] if ids else []


@dataclass
class DecodingGraphs:
    """What the methods need from a lang dir and an LM dir. Loaded lazily by :func:`load_graphs`."""

    words: list[str]  # id → word
    tokens: TokenDecoder
    H: k2.Fsa | None = None
    HLG: k2.Fsa | None = None
    G: k2.Fsa | None = None  # rescoring LM, word acceptor without ε self-loops
    _G_loops: k2.Fsa | None = field(default=None, repr=False)

    def G_with_loops(self) -> k2.Fsa:
        if self._G_loops is None:
            if self.G is None:
                raise ValueError("this method needs the rescoring G (G_4_gram.pt)")
            G = k2.arc_sort(k2.add_epsilon_self_loops(self.G))
            G.lm_scores = G.scores.clone()
            self._G_loops = G
        return self._G_loops


def _invert_table(table: dict[str, int]) -> list[str]:
    out = [""] * (max(table.values()) + 1)
    for s, i in table.items():
        out[i] = s
    return out


def load_graphs(
    lang_dir: str | os.PathLike,
    methods: Sequence[str],
    lm_dir: str | os.PathLike | None = None,
    rescore_graph: str = "G_4_gram.pt",
) -> DecodingGraphs:
    """Load words/tokens and only the graphs ``methods`` need."""
    lang_dir = Path(lang_dir)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown decoding methods {unknown}; known: {METHODS}")
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    sp = None
    if (lang_dir / "bpe.model").exists():
        from w2v.lang.bpe import load_bpe

        sp = load_bpe(lang_dir / "bpe.model")
    g = DecodingGraphs(words=_invert_table(words), tokens=TokenDecoder(_invert_table(tokens), sp))
    if "ctc-decoding" in methods:
        g.H = k2.arc_sort(k2.ctc_topo(max_token_id(tokens), modified=False))
    if NEEDS_HLG & set(methods):
        g.HLG = load_fsa(lang_dir / "HLG.pt")
        if NEEDS_G & set(methods):
            # The lattice keeps the old LM part separately so rescoring can swap it out;
            # H and L carry no scores, so HLG's scores are all LM.
            g.HLG.lm_scores = g.HLG.scores.clone()
            if lm_dir is None:
                raise ValueError(f"{sorted(NEEDS_G & set(methods))} need --lm-dir with {rescore_graph}")
            g.G = load_fsa(Path(lm_dir) / rescore_graph)
    return g


# --------------------------------------------------------------------------- helpers


def _check_input(log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
    if log_probs.dim() != 3:
        raise ValueError(f"Expected log_probs [B, T, V]. Found: {list(log_probs.shape)}")
    if lengths.dim() != 1 or lengths.shape[0] != log_probs.shape[0]:
        raise ValueError(f"Expected lengths [B={log_probs.shape[0]}]. Found: {list(lengths.shape)}")
    if int(lengths.max()) > log_probs.shape[1]:
        raise ValueError(f"lengths up to {int(lengths.max())} exceed T={log_probs.shape[1]}")


def skip_blank_frames(
    log_probs: torch.Tensor, lengths: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop every frame of a confident-blank run except its first.

    Args:
      log_probs: [B, T, V]; lengths: [B].
      threshold: blank probability above which a frame counts as confident blank.
    Returns:
      (log_probs [B, T', V], lengths [B]) with T' <= T.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"blank_skip_threshold must be in (0, 1), got {threshold}")
    B, T, _ = log_probs.shape
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    blank = (log_probs[:, :, 0] > torch.log(torch.tensor(threshold))) & valid
    prev_blank = torch.zeros_like(blank)
    prev_blank[:, 1:] = blank[:, :-1]
    keep = valid & ~(blank & prev_blank)
    new_lengths = keep.sum(dim=1)
    out = log_probs.new_zeros(B, max(int(new_lengths.max()), 1), log_probs.shape[2])
    for b in range(B):
        out[b, : int(new_lengths[b])] = log_probs[b, keep[b]]
    return out, new_lengths.to(lengths.dtype)


def get_lattice(
    log_probs: torch.Tensor, lengths: torch.Tensor, graph: k2.Fsa, opts: SearchOptions
) -> tuple[k2.Fsa, torch.Tensor]:
    """Pruned intersection of the network output with ``graph``.

    k2 wants supervision segments sorted by decreasing length, so the lattice's FSA ``i``
    belongs to utterance ``order[i]``.
    Returns:
      (lattice, order)
    """
    lengths = lengths.to(torch.int32).cpu()
    log_probs = log_probs.detach().float().cpu()
    if opts.blank_skip_threshold is not None:
        log_probs, lengths = skip_blank_frames(log_probs, lengths, opts.blank_skip_threshold)
    order = torch.argsort(lengths, descending=True, stable=True)
    segments = torch.stack(
        [order.to(torch.int32), torch.zeros_like(order, dtype=torch.int32), lengths[order]], dim=1
    )
    dense = k2.DenseFsaVec(log_probs, segments)
    lattice = k2.intersect_dense_pruned(
        graph,
        dense,
        search_beam=opts.search_beam,
        output_beam=opts.output_beam,
        min_active_states=opts.min_active_states,
        max_active_states=opts.max_active_states,
    )
    return lattice, order


def path_labels(best_paths: k2.Fsa) -> list[list[int]]:
    """Output labels (aux_labels, tensor or ragged) of each linear FSA, without 0 and -1."""
    aux = best_paths.aux_labels
    arcs_per_fsa = best_paths.arcs.shape().remove_axis(1)  # [fsa][arc]
    if isinstance(aux, k2.RaggedTensor):
        # [fsa][arc][label] → [fsa][label]
        shape = arcs_per_fsa.compose(aux.shape)
        labels = k2.RaggedTensor(shape.remove_axis(1), aux.values)
    else:
        labels = k2.RaggedTensor(arcs_per_fsa, aux)
    return labels.remove_values_leq(0).tolist()


def _unsort(hyps_sorted: list, order: torch.Tensor) -> list:
    out: list = [None] * len(hyps_sorted)
    for i, utt in enumerate(order.tolist()):
        out[utt] = hyps_sorted[i]
    return out


def _word_ids_to_words(graphs: DecodingGraphs, seqs: list[list[int]]) -> list[list[str]]:
    return [[graphs.words[i] for i in seq] for seq in seqs]


# --------------------------------------------------------------------------- methods


def ctc_greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Frame-wise argmax, repeats collapsed, blanks dropped. Returns token ids per utterance."""
    _check_input(log_probs, lengths)
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for b, n in enumerate(lengths.tolist()):
        seq = best[b, : int(n)]
        if seq.numel():
            keep = torch.ones_like(seq, dtype=torch.bool)
            keep[1:] = seq[1:] != seq[:-1]
            seq = seq[keep]
        out.append([int(t) for t in seq if t != 0])
    return out


def one_best(lattice: k2.Fsa) -> list[list[int]]:
    return path_labels(k2.shortest_path(lattice, use_double_scores=True))


@dataclass
class _Nbest:
    """Distinct word sequences sampled from each utterance's lattice."""

    word_seqs: list[list[int]]  # flattened over utterances
    utt: torch.Tensor  # [num_seqs] → lattice index
    am_scores: torch.Tensor | None = None
    tot_scores: torch.Tensor | None = None


def _sample_nbest(lattice: k2.Fsa, opts: SearchOptions) -> _Nbest:
    saved = lattice.scores.clone()
    # Flattening the scores spreads the samples over more distinct paths.
    lattice.scores = saved * opts.nbest_scale
    paths = k2.random_paths(lattice, num_paths=opts.num_paths, use_double_scores=True)
    lattice.scores = saved
    if isinstance(lattice.aux_labels, k2.RaggedTensor):
        seqs = lattice.aux_labels.index(paths)  # [utt][path][arc][word]
        seqs = seqs.remove_axis(seqs.num_axes - 2)
    else:
        seqs = k2.ragged.index(lattice.aux_labels, paths)  # [utt][path][word]
    seqs = seqs.remove_values_leq(0)
    unique, _, _ = seqs.unique(need_num_repeats=False, need_new2old_indexes=False)
    utt = unique.shape.row_ids(1).to(torch.int64)
    word_seqs = unique.remove_axis(0).tolist()
    return _Nbest(word_seqs=word_seqs, utt=utt)


def _linear_word_fsas(word_seqs: list[list[int]]) -> k2.Fsa:
    fsa = k2.linear_fsa(word_seqs)
    return k2.add_epsilon_self_loops(fsa)


def _score_nbest(lattice: k2.Fsa, nbest: _Nbest, with_lm: bool) -> None:
    """Best path score (and its acoustic part) of each word sequence within its lattice."""
    inv = k2.arc_sort(k2.invert(lattice))  # labels = words
    words = _linear_word_fsas(nbest.word_seqs)
    path_lattice = k2.intersect_device(
        inv, words, b_to_a_map=nbest.utt.to(torch.int32), sorted_match_a=True
    )
    path_lattice = k2.top_sort(k2.connect(path_lattice))
    nbest.tot_scores = path_lattice.get_tot_scores(use_double_scores=True, log_semiring=False)
    if with_lm:
        saved = path_lattice.scores
        path_lattice.scores = saved - path_lattice.lm_scores
        nbest.am_scores = path_lattice.get_tot_scores(use_double_scores=True, log_semiring=False)
        path_lattice.scores = saved


def _lm_scores(G: k2.Fsa, word_seqs: list[list[int]]) -> torch.Tensor:
    """Best-path log-probability of each word sequence under the word acceptor G."""
    words = _linear_word_fsas(word_seqs)
    b_to_a = torch.zeros(len(word_seqs), dtype=torch.int32)
    composed = k2.top_sort(k2.connect(k2.intersect_device(G, words, b_to_a, sorted_match_a=True)))
    return composed.get_tot_scores(use_double_scores=True, log_semiring=False)


def _pick_best(nbest: _Nbest, scores: torch.Tensor, num_utts: int) -> list[list[int]]:
    best: list[list[int]] = [[] for _ in range(num_utts)]
    best_score: list[float | None] = [None] * num_utts
    for i, (u, s) in enumerate(zip(nbest.utt.tolist(), scores.tolist())):
        # a sequence the rescoring LM cannot accept scores -inf; it still beats having none
        if best_score[u] is None or s > best_score[u]:
            best_score[u], best[u] = s, nbest.word_seqs[i]
    return best


def nbest_decoding(lattice: k2.Fsa, opts: SearchOptions) -> list[list[int]]:
    nbest = _sample_nbest(lattice, opts)
    if not nbest.word_seqs:
        return [[] for _ in range(lattice.shape[0])]
    _score_nbest(lattice, nbest, with_lm=False)
    return _pick_best(nbest, nbest.tot_scores, lattice.shape[0])


def nbest_rescoring(lattice: k2.Fsa, G: k2.Fsa, opts: SearchOptions) -> dict[str, list[list[int]]]:
    nbest = _sample_nbest(lattice, opts)
    if not nbest.word_seqs:
        return {f"lm_scale_{s}": [[] for _ in range(lattice.shape[0])] for s in opts.lm_scales}
    _score_nbest(lattice, nbest, with_lm=True)
    lm = _lm_scores(G, nbest.word_seqs)
    return {
        f"lm_scale_{s}": _pick_best(nbest, nbest.am_scores + s * lm, lattice.shape[0])
        for s in opts.lm_scales
    }


def whole_lattice_rescoring(
    lattice: k2.Fsa, G_with_loops: k2.Fsa, opts: SearchOptions
) -> dict[str, list[list[int]]]:
    """Replace the lattice's LM scores by those of ``G_with_loops`` (ε self-loops, arc-sorted)."""
    lat = lattice.clone()  # the HLG lattice is shared with the other methods
    lat.scores = lattice.scores - lattice.lm_scores
    del lat.lm_scores
    inv = k2.arc_sort(k2.invert(lat))  # labels = words, aux_labels = tokens
    b_to_a = torch.zeros(lattice.shape[0], dtype=torch.int32)
    rescored = k2.top_sort(k2.connect(k2.intersect_device(G_with_loops, inv, b_to_a, sorted_match_a=True)))
    rescored = k2.invert(rescored)  # labels = tokens, aux_labels = words
    lm = rescored.lm_scores.clone()
    am = rescored.scores - lm
    out = {}
    for s in opts.lm_scales:
        rescored.scores = am / s + lm  # same argmax as am + s * lm
        out[f"lm_scale_{s}"] = one_best(rescored)
    return out


# --------------------------------------------------------------------------- entry


def decode_log_probs(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    methods: Sequence[str],
    graphs: DecodingGraphs,
    opts: SearchOptions | None = None,
) -> dict[str, dict[str, list[list[str]]]]:
    """Run every method in ``methods`` on one batch.

    Returns:
      method → key → word hypotheses in input order (``key`` = method, or ``lm_scale_<s>``).
    """
    opts = opts or SearchOptions()
    _check_input(log_probs, lengths)
    results: dict[str, dict[str, list[list[str]]]] = {}
    hlg_lattice = None
    for method in methods:
        if method == "ctc-greedy-search":
            ids = ctc_greedy_search(log_probs, lengths)
            results[method] = {method: [graphs.tokens.words(s) for s in ids]}
        elif method == "ctc-decoding":
            if graphs.H is None:
                raise ValueError("ctc-decoding needs H; load graphs with it in methods")
            lattice, order = get_lattice(log_probs, lengths, graphs.H, opts)
            ids = _unsort(one_best(lattice), order)
            results[method] = {method: [graphs.tokens.words(s) for s in ids]}
        elif method in NEEDS_HLG:
            if graphs.HLG is None:
                raise ValueError(f"{method} needs HLG; load graphs with it in methods")
            if hlg_lattice is None:
                hlg_lattice = get_lattice(log_probs, lengths, graphs.HLG, opts)
            lattice, order = hlg_lattice
            if method == "1best":
                per_key = {method: one_best(lattice)}
            elif method == "nbest":
                per_key = {method: nbest_decoding(lattice, opts)}
            elif method == "nbest-rescoring":
                per_key = nbest_rescoring(lattice, graphs.G, opts)
            else:
                per_key = whole_lattice_rescoring(lattice, graphs.G_with_loops(), opts)
            results[method] = {
                k: _word_ids_to_words(graphs, _unsort(v, order)) for k, v in per_key.items()
            }
        else:
            raise ValueError(f"unknown decoding method {method!r}; known: {METHODS}")
    return results


@dataclass
class Batch:
    """Network output for a batch, with what scoring needs."""

    log_probs: torch.Tensor  # [B, T, V]
    lengths: torch.Tensor  # [B]
    texts: list[str]  # reference transcripts
    cut_ids: list[str]


def decode_dataset(
    batches,
    methods: Sequence[str],
    graphs: DecodingGraphs,
    opts: SearchOptions | None = None,
    log_every: int = 20,
) -> dict[str, dict[str, list[tuple[str, list[str], list[str]]]]]:
    """Decode every :class:`Batch` of ``batches`` with every method.

    Returns:
      method → key → [(cut_id, ref words, hyp words)] over the whole set.
    """
    out: dict[str, dict[str, list]] = {}
    num_cuts = 0
    for i, batch in enumerate(batches):
        hyps = decode_log_probs(batch.log_probs, batch.lengths, methods, graphs, opts)
        refs = [t.split() for t in batch.texts]
        for method, per_key in hyps.items():
            for key, h in per_key.items():
                out.setdefault(method, {}).setdefault(key, []).extend(
                    zip(batch.cut_ids, refs, h)
                )
        num_cuts += len(batch.cut_ids)
        if log_every and i % log_every == 0:
            logging.info("batch %d, cuts decoded: %d", i, num_cuts)
    return out
