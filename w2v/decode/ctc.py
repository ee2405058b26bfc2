"""CTC decoding methods over network output, by their icefall names.

Every method takes ``log_probs [B, T, V]`` (log-softmax, blank = 0) and ``lengths [B]`` (valid
frames) and returns ``{key: hyps}``, ``hyps[b]`` the word list of utterance ``b`` in input order.
Keys: the method name, or ``lm_scale_<s>`` for the rescoring sweeps.

All FSAs live on the CPU (k2 CPU build).

Decoding memory is bounded. Output that matches nothing the model knows (an early checkpoint,
audio unlike the training data) is flat: every path scores alike and the beams prune little. k2's
search then returns up to frames × ``max_active_states`` × fan-out arcs, most of them on no
complete path, and the n-best and rescoring intersections built on such a lattice grow with its
arcs times the words of its paths. So searches run a few cuts at a time, lattices keep only arcs
on complete paths, and a cut that meets a bound of :class:`SearchOptions` is pruned to the paths
nearest its best path (a smaller output beam for that cut), with a warning naming the cut. The
search of a single cut has only k2's own bound, ``max_active_states``.
"""

from __future__ import annotations

import logging
import os
import resource
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import _k2  # k2's C++ module: pruning on a posterior k2 does not compute itself
import k2
import torch

from w2v.asr.ctc import greedy_keep
from w2v.lang.graph import build_ctc_topo
from w2v.lang.lexicon import load_fsa
from w2v.lang.symbols import read_symbol_table
from w2v.models.padding import lengths_to_padding_mask

METHODS = (
    "ctc-greedy-search",
    "ctc-decoding",
    "1best",
    "nbest",
    "nbest-rescoring",
    "whole-lattice-rescoring",
)
# attention-decoder (w2v.decode.attention) rescores the HLG lattice's n-best with a model's decoder
NEEDS_HLG = {"1best", "nbest", "nbest-rescoring", "whole-lattice-rescoring", "attention-decoder"}
NEEDS_G = {"nbest-rescoring", "whole-lattice-rescoring"}
DEFAULT_LM_SCALES = tuple(round(0.1 * i, 1) for i in range(1, 21))  # 0.1 .. 2.0


@dataclass
class SearchOptions:
    """k2 search settings (icefall's defaults), the n-best / rescoring knobs and memory bounds.

    Beams are in nats. ``num_paths`` paths are sampled per utterance for the n-best methods,
    with lattice scores multiplied by ``nbest_scale`` while sampling.

    Bounds (None switches one off; well-trained output stays far below them):
      search_frames: frames of network output per k2 search; a batch is searched a few cuts at a
        time (a cut is never split), so the unpruned lattice of one search stays small.
      max_arcs_per_frame: a cut's lattice beyond this many arcs per frame is pruned to its best
        arcs (those on the paths nearest its best path).
      max_product_arcs: arcs one n-best or whole-lattice intersection may build. A cut whose n-best
        would need more has its lattice pruned and is sampled again; one whose rescored lattice
        gets larger is pruned and rescored again.
      max_step_mb: memory (MB of address space) one n-best or whole-lattice intersection may add.
        Past it the step fails instead of the kernel killing the process, and is retried smaller
        (cut by cut, then on a pruned lattice). The search is not guarded: k2 prunes in a worker
        thread, where a failed allocation aborts the process; search_frames keeps it to a few cuts.
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
    search_frames: int | None = 250
    max_arcs_per_frame: int | None = 1000
    max_product_arcs: int | None = 20_000_000
    max_step_mb: int | None = 4096


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
    device: torch.device | str = "cpu",
) -> DecodingGraphs:
    """Load words/tokens and only the graphs ``methods`` need.

    ``device``: where the first-pass search runs. H and HLG go to a GPU when the installed k2 has
    CUDA; the lattices come back to the CPU for everything after the search (capping, n-best,
    rescoring). With a CPU-only k2 the search stays on the CPU.
    """
    lang_dir = Path(lang_dir)
    unknown = [m for m in methods if m not in METHODS and m not in NEEDS_HLG]
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
        g.H = build_ctc_topo(tokens)
    if NEEDS_HLG & set(methods):
        g.HLG = load_fsa(lang_dir / "HLG.pt")
        # The lattice keeps the LM part separately so that 1best can weigh it and rescoring can
        # swap it out; H and L carry no scores, so HLG's scores are all LM.
        g.HLG.lm_scores = g.HLG.scores.clone()
        if NEEDS_G & set(methods):
            if lm_dir is None:
                raise ValueError(f"{sorted(NEEDS_G & set(methods))} need --lm-dir with {rescore_graph}")
            g.G = load_fsa(Path(lm_dir) / rescore_graph)
    device = torch.device(device)
    if device.type == "cuda":
        if getattr(k2, "with_cuda", False):
            g.H = g.H.to(device) if g.H is not None else None
            g.HLG = g.HLG.to(device) if g.HLG is not None else None
        else:
            logging.getLogger(__name__).info(
                "this k2 has no CUDA: the lattice search runs on the CPU (tools/install_k2.sh --device cuda)")
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
    valid = ~lengths_to_padding_mask(lengths, T)
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
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    graph: k2.Fsa,
    opts: SearchOptions,
    names: Sequence[str] | None = None,
) -> tuple[k2.Fsa, torch.Tensor]:
    """Pruned intersection of the network output with ``graph``, bounded as ``opts`` says.

    k2 wants supervision segments sorted by decreasing length, so the lattice's FSA ``i``
    belongs to utterance ``order[i]``.
    Args:
      names: one per utterance, for warnings (cut ids); default: the utterance's index.
    Returns:
      (lattice, order)
    """
    lattices, order = [], []
    for lattice, chunk in search(log_probs, lengths, graph, opts, names):
        lattices.append(lattice)
        order.append(chunk)
    return (lattices[0] if len(lattices) == 1 else k2.cat(lattices)), torch.cat(order)


def search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    graph: k2.Fsa,
    opts: SearchOptions,
    names: Sequence[str] | None = None,
    cap: bool = True,
) -> Iterator[tuple[k2.Fsa, torch.Tensor]]:
    """:func:`get_lattice` a few cuts at a time (``opts.search_frames``), longest first.

    k2 returns every arc still within the beams when it last pruned, most of them on no complete
    path when the output is flat (measured: 1.2M arcs for 6 s of an early checkpoint's output,
    16k of them on complete paths); only arcs on complete paths are kept, which changes no path.
    Yields:
      (lattice, chunk): FSA ``i`` of the lattice belongs to utterance ``chunk[i]``.
    """
    lengths = lengths.to(torch.int32).cpu()
    log_probs = log_probs.detach().float().cpu()
    if opts.blank_skip_threshold is not None:
        log_probs, lengths = skip_blank_frames(log_probs, lengths, opts.blank_skip_threshold)
    log_probs = log_probs.to(graph.device)  # a GPU graph (CUDA k2) searches on the GPU
    order = torch.argsort(lengths, descending=True, stable=True)
    for chunk in _search_chunks(order, lengths, opts.search_frames):
        segments = torch.stack(
            [chunk.to(torch.int32), torch.zeros_like(chunk, dtype=torch.int32), lengths[chunk]], dim=1
        )
        lattice = k2.intersect_dense_pruned(
            graph,
            k2.DenseFsaVec(log_probs, segments),
            search_beam=opts.search_beam,
            output_beam=opts.output_beam,
            min_active_states=opts.min_active_states,
            max_active_states=opts.max_active_states,
        )
        lattice = k2.connect(lattice).to("cpu")  # the steps after the search run on the CPU
        if cap and opts.max_arcs_per_frame is not None:
            lattice = _cap_lattice(lattice, lengths[chunk], opts.max_arcs_per_frame,
                                   [_name(names, int(u)) for u in chunk])
        yield lattice, chunk


def _search_chunks(order: torch.Tensor, lengths: torch.Tensor, max_frames: int | None):
    """Consecutive runs of ``order`` holding at most ``max_frames`` frames (at least one cut)."""
    if max_frames is None:
        yield order
        return
    start, frames = 0, 0
    for i, u in enumerate(order.tolist()):
        if i > start and frames + int(lengths[u]) > max_frames:
            yield order[start:i]
            start, frames = i, 0
        frames += int(lengths[u])
    yield order[start:]


def _name(names: Sequence[str] | None, utt: int) -> str:
    return f"cut {names[utt]}" if names is not None else f"utterance {utt} of the batch"


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


# --------------------------------------------------------------------------- bounds


@contextmanager
def memory_limit(extra_mb: int | None) -> Iterator[None]:
    """Let the process take at most ``extra_mb`` MB more address space while this lasts.

    An allocation past it fails (k2 and torch raise RuntimeError or MemoryError) instead of the
    kernel killing the process once memory is gone, so a step can be retried smaller; icefall
    relies on CUDA raising out-of-memory the same way. Only for k2 operations that allocate in the
    calling thread (intersect_device, connect, ...): in k2's search a failed allocation in its
    pruning thread aborts the process. Process-wide while it lasts: decoding allocates from one
    thread. Linux only (the current size comes from /proc/self/statm); elsewhere, and with None,
    no limit.
    """
    try:
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError):
        size = None
    if extra_mb is None or size is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + extra_mb * 2**20
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            limit = min(limit, bound)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def num_arcs_per_fsa(fsas: k2.Fsa) -> torch.Tensor:
    """[num_fsas] arcs of each FSA of an FsaVec (int64)."""
    splits = _arc_splits(fsas)
    return splits[1:] - splits[:-1]


def _arc_splits(fsas: k2.Fsa) -> torch.Tensor:
    """[num_fsas + 1] offsets of each FSA's arcs in ``fsas.arcs``."""
    shape = fsas.arcs.shape()
    return shape.row_splits(2)[shape.row_splits(1).long()].long()


def beam_prune(fsas: k2.Fsa, max_arcs: Sequence[int]) -> tuple[k2.Fsa, list[float | None]]:
    """Cut each FSA over ``max_arcs[i]`` arcs down to the arcs of the paths nearest its best path.

    An arc's tropical posterior is the score of the best path through it minus that of the best
    path. Keeping the arcs whose posterior clears a threshold is a lattice beam: it keeps whole
    paths (each arc of the best path through a kept arc scores at least as high) and always the
    best path, so its best path is unchanged. The threshold is the ``max_arcs[i]``-th highest
    posterior; where ties there (flat output) would keep more, only the arcs above it and
    k2's best path are kept. At most ``max(max_arcs[i], best path)`` arcs remain.
    Returns:
      (the pruned FsaVec, per FSA the beam in nats it was pruned to, or None if left alone)
    """
    splits = _arc_splits(fsas)
    sizes = (splits[1:] - splits[:-1]).tolist()
    over = [i for i, (n, m) in enumerate(zip(sizes, max_arcs)) if n > m]
    beams: list[float | None] = [None] * len(sizes)
    if not over:
        return fsas, beams
    post = fsas.get_arc_post(use_double_scores=True, log_semiring=False)
    keep = torch.zeros_like(post)  # 0 keeps an arc, -inf drops it (threshold below: log 0.5)
    best_path = None
    for i in over:
        lo, hi = int(splits[i]), int(splits[i + 1])
        p = post[lo:hi]
        k = max(1, int(max_arcs[i]))
        threshold = torch.topk(p, k, sorted=False).values.min()
        kept = p >= threshold
        if int(kept.sum()) > k:  # ties at the threshold
            kept = p > threshold
            if best_path is None:
                best_path = _best_path_arcs(fsas)
            kept[best_path[(best_path >= lo) & (best_path < hi)] - lo] = True
            threshold = p[kept].min()
        keep[lo:hi] = torch.where(kept, 0.0, float("-inf"))
        beams[i] = max(0.0, -float(threshold))
    ragged, arc_map = _k2.prune_on_arc_post_double(fsas.arcs, keep, 0.5, True)
    pruned = k2.utils.fsa_from_unary_function_tensor(fsas, ragged, arc_map)
    return k2.connect(pruned), beams


def _best_path_arcs(fsas: k2.Fsa) -> torch.Tensor:
    """Indexes into ``fsas.arcs`` of the arcs of each FSA's best path (as k2.shortest_path)."""
    entering_arcs = fsas._get_entering_arcs(use_double_scores=True)
    _, arcs = _k2.shortest_path(fsas.arcs, entering_arcs)
    return arcs.values.long()


def _cap_lattice(lattice: k2.Fsa, frames: torch.Tensor, max_arcs_per_frame: int,
                 names: Sequence[str]) -> k2.Fsa:
    limits = [max_arcs_per_frame * max(1, int(t)) for t in frames]
    before = num_arcs_per_fsa(lattice).tolist()
    lattice, beams = beam_prune(lattice, limits)
    after = num_arcs_per_fsa(lattice).tolist()
    for i, beam in enumerate(beams):
        if beam is not None:
            logging.warning(
                "%s: lattice of %d arcs over %d frames exceeds max_arcs_per_frame %d; pruned to "
                "the paths within %.2f nats of the best: %d arcs",
                names[i], before[i], int(frames[i]), max_arcs_per_frame, beam, after[i],
            )
    return lattice


def _groups(sizes: Sequence[int], budget: int | None) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) ranges whose sizes sum to at most ``budget`` (at least one item)."""
    if budget is None:
        return [(0, len(sizes))] if len(sizes) else []
    out, lo, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > lo and total + n > budget:
            out.append((lo, i))
            lo, total = i, 0
        total += n
    if lo < len(sizes):
        out.append((lo, len(sizes)))
    return out


# --------------------------------------------------------------------------- methods


def ctc_greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Frame-wise argmax, repeats collapsed, blanks dropped. Returns token ids per utterance."""
    _check_input(log_probs, lengths)
    best, keep = greedy_keep(log_probs, lengths)
    best, keep = best.cpu(), keep.cpu()
    return [best[b][keep[b]].tolist() for b in range(best.shape[0])]


def one_best(lattice: k2.Fsa) -> list[list[int]]:
    return path_labels(k2.shortest_path(lattice, use_double_scores=True))


def one_best_per_lm_scale(lattice: k2.Fsa, lm_scales: Sequence[float]) -> dict[str, list[list[int]]]:
    """The best path of the HLG lattice for ``am + s × graph`` at every scale ``s`` (and at 1.0,
    icefall's 1best), keys ``lm_scale_<s>``: Kaldi's scoring of a lattice at each LM weight.

    Why: the first pass charges every word its full n-gram cost. Where the network is less than
    sure of a word's tokens, dropping the word (blanks) costs less than the word's LM cost, so
    the HLG deletes: a character model on the synthetic AISHELL corpus lost 85 characters to
    deletions in 1best against 42 in greedy search. A scale below 1, chosen on dev, weighs the
    LM as much as it helps (Kaldi's LMWT; wav2vec 2.0's LM weight).
    """
    saved = lattice.scores.clone()
    out = best_per_lm_scale(lattice, sorted(set(lm_scales) | {1.0}))
    lattice.scores = saved
    return out


@dataclass
class _Nbest:
    """Distinct word sequences sampled from each utterance's lattice."""

    word_seqs: list[list[int]]  # flattened over utterances, grouped by utterance
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


def _nbest_product_arcs(inv: k2.Fsa, nbest: _Nbest) -> torch.Tensor:
    """[num_seqs] upper bound on the arcs of each sequence's intersection with its lattice.

    ``inv`` is the inverted lattice (labels = words; top-sorted, as k2's lattices are). A state of
    the product pairs a lattice state ``s`` with ``j`` words of the sequence read, ``j`` between
    the fewest and the most words on the paths that reach ``s``, and each arc leaving ``s``
    leaves each such pair at most once. On a trained model's lattice few word counts reach a
    state; on flat output many do, and the bound grows with them.
    """
    words = (inv.labels > 0).to(torch.float64)
    counter = k2.Fsa(inv.arcs.clone())  # scores replaced by word counts
    counter.scores = words.to(counter.scores.dtype)
    most = counter.get_forward_scores(use_double_scores=True, log_semiring=False)
    counter.scores = -words.to(counter.scores.dtype)
    fewest = -counter.get_forward_scores(use_double_scores=True, log_semiring=False)
    src = inv.arcs.shape().row_ids(2).long()  # arc → state (over the whole FsaVec)
    lo, hi = fewest[src].long(), most[src].long()
    splits = _arc_splits(inv).tolist()
    lens = torch.tensor([len(seq) for seq in nbest.word_seqs], dtype=torch.int64)
    bound = torch.zeros(len(nbest.word_seqs), dtype=torch.int64)
    for u in nbest.utt.unique().tolist():
        a, b = splits[u], splits[u + 1]
        seqs = (nbest.utt == u).nonzero().flatten()
        top = int(lens[seqs].max()) + 1
        # arcs[L] = arcs whose word-count range holds L; bound(L) = sum of arcs[0..L]
        delta = torch.bincount(lo[a:b].clamp(max=top), minlength=top + 1)
        delta -= torch.bincount((hi[a:b] + 1).clamp(max=top), minlength=top + 1)
        bound[seqs] = delta.cumsum(0).cumsum(0)[lens[seqs]]
    return bound


def _bounded_nbest(
    lattice: k2.Fsa, opts: SearchOptions, names: Sequence[str], method: str
) -> tuple[k2.Fsa, _Nbest]:
    """Sample the n-best; a cut whose n-best intersection could pass ``max_product_arcs`` has its
    lattice pruned and is sampled again (the last round keeps only its best path)."""
    nbest = _sample_nbest(lattice, opts)
    if opts.max_product_arcs is None or not nbest.word_seqs:
        return lattice, nbest
    num_utts = lattice.shape[0]
    for round_ in range(3):
        need = torch.zeros(num_utts, dtype=torch.int64).index_add_(
            0, nbest.utt, _nbest_product_arcs(k2.invert(lattice), nbest))
        over = (need > opts.max_product_arcs).nonzero().flatten().tolist()
        if not over:
            break
        before = num_arcs_per_fsa(lattice).tolist()
        limits = list(before)
        for u in over:
            shrink = opts.max_product_arcs / int(need[u]) / 2**round_
            limits[u] = 1 if round_ == 2 else max(1, int(before[u] * shrink))
        lattice, beams = beam_prune(lattice, limits)
        after = num_arcs_per_fsa(lattice).tolist()
        for u in over:
            logging.warning(
                "%s: %s: the n-best could build %d arcs, over max_product_arcs %d; lattice of %d "
                "arcs pruned to the paths within %.2f nats of the best (%d arcs), n-best sampled again",
                method, names[u], int(need[u]), opts.max_product_arcs, before[u], beams[u] or 0.0, after[u],
            )
        nbest = _resample(lattice, nbest, over, opts)
    return lattice, nbest


def _resample(lattice: k2.Fsa, nbest: _Nbest, utts: list[int], opts: SearchOptions) -> _Nbest:
    """``nbest`` with the sequences of ``utts`` sampled again from ``lattice`` (k2 samples each FSA
    on its own, so the others would come out the same)."""
    again = _sample_nbest(k2.index_fsa(lattice, torch.tensor(utts, dtype=torch.int32)), opts)
    redo = set(utts)
    seqs: dict[int, list[list[int]]] = {}
    for s, u in zip(nbest.word_seqs, nbest.utt.tolist()):
        if u not in redo:
            seqs.setdefault(u, []).append(s)
    for s, i in zip(again.word_seqs, again.utt.tolist()):
        seqs.setdefault(utts[i], []).append(s)
    word_seqs, utt = [], []
    for u in sorted(seqs):
        word_seqs += seqs[u]
        utt += [u] * len(seqs[u])
    return _Nbest(word_seqs=word_seqs, utt=torch.tensor(utt, dtype=torch.int64))


def _score_nbest(
    lattice: k2.Fsa, nbest: _Nbest, with_lm: bool, opts: SearchOptions, names: Sequence[str]
) -> None:
    """Best path score (and its acoustic part) of each word sequence within its lattice.

    Sequences are intersected a group at a time, each group within ``max_product_arcs``; a group
    that runs out of ``max_step_mb`` is split, and a sequence that still does scores -inf.
    """
    inv = k2.arc_sort(k2.invert(lattice))  # labels = words
    bound = _nbest_product_arcs(inv, nbest).tolist()
    n = len(nbest.word_seqs)
    tot = torch.full((n,), float("-inf"), dtype=torch.float64)
    am = torch.full((n,), float("-inf"), dtype=torch.float64)
    pending = _groups(bound, opts.max_product_arcs)[::-1]
    while pending:
        lo, hi = pending.pop()
        try:
            with memory_limit(opts.max_step_mb):
                words = _linear_word_fsas(nbest.word_seqs[lo:hi])
                path_lattice = k2.intersect_device(
                    inv, words, b_to_a_map=nbest.utt[lo:hi].to(torch.int32), sorted_match_a=True
                )
                path_lattice = k2.top_sort(k2.connect(path_lattice))
                tot[lo:hi] = path_lattice.get_tot_scores(use_double_scores=True, log_semiring=False)
                if with_lm:
                    path_lattice.scores = path_lattice.scores - path_lattice.lm_scores
                    am[lo:hi] = path_lattice.get_tot_scores(use_double_scores=True, log_semiring=False)
                del path_lattice
        except (RuntimeError, MemoryError) as e:
            if hi - lo > 1:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
            else:
                logging.warning("n-best: %s: scoring one of its sequences ran out of memory "
                                "(max_step_mb %s: %s); it is left out", names[int(nbest.utt[lo])],
                                opts.max_step_mb, _first_line(e))
    nbest.tot_scores = tot
    if with_lm:
        nbest.am_scores = am


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


def _lattice_names(lattice: k2.Fsa, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else [_name(None, i) for i in range(lattice.shape[0])]


def nbest_decoding(
    lattice: k2.Fsa, opts: SearchOptions, names: Sequence[str] | None = None
) -> list[list[int]]:
    """``names[i]`` names the cut of the lattice's FSA ``i`` in warnings."""
    lattice, nbest = _bounded_nbest(lattice, opts, _lattice_names(lattice, names), "nbest")
    if not nbest.word_seqs:
        return [[] for _ in range(lattice.shape[0])]
    _score_nbest(lattice, nbest, False, opts, _lattice_names(lattice, names))
    return _pick_best(nbest, nbest.tot_scores, lattice.shape[0])


def nbest_rescoring(
    lattice: k2.Fsa, G: k2.Fsa, opts: SearchOptions, names: Sequence[str] | None = None
) -> dict[str, list[list[int]]]:
    lattice, nbest = _bounded_nbest(lattice, opts, _lattice_names(lattice, names), "nbest-rescoring")
    if not nbest.word_seqs:
        return {f"lm_scale_{s}": [[] for _ in range(lattice.shape[0])] for s in opts.lm_scales}
    _score_nbest(lattice, nbest, True, opts, _lattice_names(lattice, names))
    lm = _lm_scores(G, nbest.word_seqs)
    return {
        f"lm_scale_{s}": _pick_best(nbest, nbest.am_scores + s * lm, lattice.shape[0])
        for s in opts.lm_scales
    }


# The rescored lattice of a whole-lattice group is compared with max_product_arcs only once it is
# built, so groups are formed from their input: this many times fewer lattice arcs (measured: the
# rescored lattice has 3-21× the arcs of its input).
_RESCORE_GROWTH = 32
_RESCORE_TRIES = 4  # prunings of a cut whose rescoring fails, the last down to its best path


class _TooLarge(RuntimeError):
    pass


def whole_lattice_rescoring(
    lattice: k2.Fsa, G_with_loops: k2.Fsa, opts: SearchOptions, names: Sequence[str] | None = None
) -> dict[str, list[list[int]]]:
    """Replace the lattice's LM scores by those of ``G_with_loops`` (ε self-loops, arc-sorted).

    Lattices are rescored a group at a time. A group whose rescoring fails (out of memory) or
    builds more than ``max_product_arcs`` arcs is retried cut by cut; a cut that still does has
    its lattice pruned and is retried (icefall's ``rescore_with_whole_lattice`` prunes and retries
    too), and in the end keeps its first-pass best path.
    """
    names = _lattice_names(lattice, names)
    num_utts = lattice.shape[0]
    out: dict[str, list] = {f"lm_scale_{s}": [None] * num_utts for s in opts.lm_scales}
    budget = opts.max_product_arcs
    sizes = num_arcs_per_fsa(lattice).tolist()
    pending = [list(range(lo, hi)) for lo, hi in
               _groups(sizes, None if budget is None else max(1, budget // _RESCORE_GROWTH))]
    pruned: dict[int, k2.Fsa] = {}  # cut → its lattice after pruning
    tries = [0] * num_utts
    while pending:
        utts = pending.pop()
        if len(utts) == 1 and utts[0] in pruned:
            part = pruned[utts[0]]
        elif len(utts) == num_utts:
            part = lattice
        else:
            part = k2.index_fsa(lattice, torch.tensor(utts, dtype=torch.int32))
        try:
            with memory_limit(opts.max_step_mb):
                rescored = _rescore(part, G_with_loops, budget)
        except (RuntimeError, MemoryError) as e:  # out of max_step_mb, or _TooLarge
            if len(utts) > 1:
                pending += [[u] for u in reversed(utts)]
                continue
            u = utts[0]
            tries[u] += 1
            # a quarter of the arcs each time, the best path alone the last time
            limit = 1 if tries[u] >= _RESCORE_TRIES else max(1, part.num_arcs // 4)
            smaller, beams = beam_prune(part, [limit])
            if smaller.num_arcs < part.num_arcs:
                logging.warning("whole-lattice-rescoring: %s: %s; lattice of %d arcs pruned to the "
                                "paths within %.2f nats of the best (%d arcs), rescoring again",
                                names[u], _first_line(e), part.num_arcs, beams[0] or 0.0,
                                smaller.num_arcs)
                pruned[u] = smaller
                pending.append(utts)
            else:  # nothing left to prune
                logging.warning("whole-lattice-rescoring: %s: %s with %d arcs; keeping its "
                                "first-pass best path", names[u], _first_line(e), part.num_arcs)
                best = one_best(part)[0]
                for key in out:
                    out[key][u] = best
            continue
        for key, hyps in best_per_lm_scale(rescored, opts.lm_scales).items():
            for u, h in zip(utts, hyps):
                out[key][u] = h
    return out


def _rescore(lattice: k2.Fsa, G_with_loops: k2.Fsa, max_arcs: int | None) -> k2.Fsa:
    """The lattice with G's LM scores in place of its own (labels tokens, aux_labels words)."""
    lat = lattice.clone()  # the HLG lattice is shared with the other methods
    lat.scores = lattice.scores - lattice.lm_scores
    del lat.lm_scores
    inv = k2.arc_sort(k2.invert(lat))  # labels = words, aux_labels = tokens
    b_to_a = torch.zeros(lattice.shape[0], dtype=torch.int32)
    rescored = k2.intersect_device(G_with_loops, inv, b_to_a, sorted_match_a=True)
    if max_arcs is not None and rescored.num_arcs > max_arcs:
        raise _TooLarge(f"rescored lattice of {rescored.num_arcs} arcs, over max_product_arcs {max_arcs}")
    return k2.invert(k2.top_sort(k2.connect(rescored)))  # labels = tokens, aux_labels = words


def best_per_lm_scale(lattice: k2.Fsa, lm_scales: Sequence[float]) -> dict[str, list[list[int]]]:
    """``lm_scale_<s>`` → the best paths for ``am + s × lm``; leaves ``lattice.scores`` changed."""
    lm = lattice.lm_scores.clone()
    am = lattice.scores - lm
    out = {}
    for s in lm_scales:
        lattice.scores = am / s + lm  # same argmax as am + s * lm
        out[f"lm_scale_{s}"] = one_best(lattice)
    return out


# --------------------------------------------------------------------------- entry


def decode_log_probs(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    methods: Sequence[str],
    graphs: DecodingGraphs,
    opts: SearchOptions | None = None,
    cut_ids: Sequence[str] | None = None,
) -> dict[str, dict[str, list[list[str]]]]:
    """Run every method in ``methods`` on one batch.

    Args:
      cut_ids: one per utterance, to name the cuts in warnings.
    Returns:
      method → key → word hypotheses in input order (``key`` = method, or ``lm_scale_<s>``).
    """
    opts = opts or SearchOptions()
    _check_input(log_probs, lengths)
    if cut_ids is not None and len(cut_ids) != log_probs.shape[0]:
        raise ValueError(f"Expected {log_probs.shape[0]} cut ids. Found: {len(cut_ids)}")
    results: dict[str, dict[str, list[list[str]]]] = {}
    hlg_lattice = None
    for method in methods:
        if method == "ctc-greedy-search":
            ids = ctc_greedy_search(log_probs, lengths)
            results[method] = {method: [graphs.tokens.words(s) for s in ids]}
        elif method == "ctc-decoding":
            if graphs.H is None:
                raise ValueError("ctc-decoding needs H; load graphs with it in methods")
            # Its best path is all it needs: searched and read a few cuts at a time, never held
            # whole, and never pruned (pruning keeps the best path).
            ids: list = [None] * log_probs.shape[0]
            for lattice, chunk in search(log_probs, lengths, graphs.H, opts, cut_ids, cap=False):
                for u, seq in zip(chunk.tolist(), one_best(lattice)):
                    ids[u] = seq
            results[method] = {method: [graphs.tokens.words(s) for s in ids]}
        elif method in NEEDS_HLG:
            if graphs.HLG is None:
                raise ValueError(f"{method} needs HLG; load graphs with it in methods")
            if hlg_lattice is None:
                hlg_lattice = get_lattice(log_probs, lengths, graphs.HLG, opts, cut_ids)
            lattice, order = hlg_lattice
            names = [_name(cut_ids, u) for u in order.tolist()]
            if method == "1best":
                per_key = one_best_per_lm_scale(lattice, opts.lm_scales)
            elif method == "nbest":
                per_key = {method: nbest_decoding(lattice, opts, names)}
            elif method == "nbest-rescoring":
                per_key = nbest_rescoring(lattice, graphs.G, opts, names)
            elif method == "whole-lattice-rescoring":
                per_key = whole_lattice_rescoring(lattice, graphs.G_with_loops(), opts, names)
            else:
                raise ValueError(f"{method} is not a CTC method (w2v.decode.attention has it)")
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
    encoder_out: torch.Tensor | None = None  # [B, T, D] on the model's device, for the attention methods


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
        hyps = decode_log_probs(batch.log_probs, batch.lengths, methods, graphs, opts, batch.cut_ids)
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
