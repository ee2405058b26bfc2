"""Decoding methods of a joint CTC/attention model, by wenet's and icefall's names.

- ``ctc-prefix-beam-search`` (wenet): a beam over CTC prefixes (every alignment of a prefix
  summed, blank and non-blank endings apart), on the CTC posteriors alone.
- ``attention`` (wenet): beam search in the attention decoder over the encoder output.
- ``attention-rescoring`` (wenet): the prefix beam's n-best rescored by the decoder: the best of
  ``decoder log-prob + ctc_weight × CTC log-prob``.
- ``attention-decoder`` (icefall's conformer_ctc): the HLG lattice's n-best rescored by the
  decoder: the best of ``am + lm_scale × n-gram LM + attention_scale × decoder`` for every pair
  of scales (keys ``lm_scale_<l>_attention_scale_<a>``).

Each method returns word hypotheses per utterance, as the CTC methods of :mod:`w2v.decode.ctc`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from w2v.asr.decoder import score_sequences
from w2v.decode import ctc as C

ATTENTION_METHODS = ("ctc-prefix-beam-search", "attention", "attention-rescoring", "attention-decoder")


@dataclass
class AttentionOptions:
    """beam: prefixes / hypotheses kept (wenet: 10). ctc_weight: the CTC score's weight in
    attention-rescoring (wenet's AISHELL recipe: 0.3). attention_scales: the decoder score's
    weights tried by attention-decoder (lm scales come from :class:`~w2v.decode.ctc.SearchOptions`)."""

    beam: int = 10
    ctc_weight: float = 0.3
    attention_scales: Sequence[float] = (0.3, 0.5, 1.0, 1.5)


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def ctc_prefix_beam_search(log_probs: torch.Tensor, beam: int = 10) -> list[tuple[tuple[int, ...], float]]:
    """The ``beam`` best token prefixes of one utterance's CTC output ``[T, V]`` (blank = 0) with
    their log-probabilities (summed over alignments), best first."""
    # prefix → (log p ending in blank, log p ending in its last token)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in log_probs.float().cpu():
        top = torch.topk(frame, min(beam, frame.numel())).indices.tolist()
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            for t in top:
                p = float(frame[t])
                if t == 0:
                    e = nxt[prefix]
                    e[0] = _logsumexp(e[0], _logsumexp(pb, pnb) + p)
                    continue
                last = prefix[-1] if prefix else None
                longer = prefix + (t,)
                e = nxt[longer]
                if t == last:  # a repeat extends only across a blank; without one it stays
                    e[1] = _logsumexp(e[1], pb + p)
                    same = nxt[prefix]
                    same[1] = _logsumexp(same[1], pnb + p)
                else:
                    e[1] = _logsumexp(e[1], _logsumexp(pb, pnb) + p)
        alive = [kv for kv in nxt.items() if _logsumexp(*kv[1]) > -math.inf]
        ranked = sorted(alive, key=lambda kv: -_logsumexp(*kv[1]))[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return sorted(((k, _logsumexp(*v)) for k, v in beams.items()), key=lambda kv: -kv[1])


@torch.no_grad()
def attention_beam_search(decoder, memory: torch.Tensor, memory_len: int, sos_eos: int, beam: int = 10,
                          max_len: int | None = None) -> list[int]:
    """The best token sequence of the attention decoder for one utterance (``memory [T, D]``),
    by beam search over complete hypotheses (ended by ``<sos/eos>``) with their log-probabilities."""
    from w2v.asr.decoder import decoder_io

    max_len = max_len or max(1, memory_len)
    alive: list[tuple[list[int], float]] = [([], 0.0)]
    done: list[tuple[list[int], float]] = []
    for _ in range(max_len + 1):
        seqs = [s for s, _ in alive]
        ys_in, _, lens = decoder_io(seqs, sos_eos, memory.device)
        n = len(seqs)
        logits = decoder(memory[None].expand(n, -1, -1), torch.full((n,), memory_len, device=memory.device),
                         ys_in, lens)
        last = logits[torch.arange(n), lens - 1].float().log_softmax(-1).cpu()
        candidates = []
        for (seq, score), logp in zip(alive, last):
            values, ids = torch.topk(logp, min(beam, logp.numel()))
            candidates += [(seq + [int(i)], score + float(v)) for v, i in zip(values, ids)]
        candidates.sort(key=lambda c: -c[1])
        alive = []
        for seq, score in candidates:
            if seq[-1] == sos_eos:
                done.append((seq[:-1], score))
            elif len(alive) < beam:
                alive.append((seq, score))
        best_done = max((s for _, s in done), default=-math.inf)
        if not alive or (len(done) >= beam and max(s for _, s in alive) < best_done):
            break
    pool = done or alive
    return max(pool, key=lambda c: c[1])[0]


def attention_rescoring(nbest: list[tuple[tuple[int, ...], float]], decoder, memory: torch.Tensor,
                        memory_len: int, sos_eos: int, ctc_weight: float) -> list[int]:
    """The prefix of ``nbest`` (from :func:`ctc_prefix_beam_search`) with the best
    ``decoder log-prob + ctc_weight × CTC log-prob``."""
    if not nbest:
        return []
    att = score_sequences(decoder, memory, memory_len, [list(p) for p, _ in nbest], sos_eos)
    total = [float(a) + ctc_weight * c for a, (_, c) in zip(att, nbest)]
    return list(nbest[max(range(len(nbest)), key=total.__getitem__)][0])


def attention_decoder_rescoring(
    lattice, order: torch.Tensor, memory: torch.Tensor, memory_lens: torch.Tensor, decoder, sos_eos: int,
    word_tokens: Callable[[list[int]], list[int]], opts: C.SearchOptions, aopts: AttentionOptions,
    names: Sequence[str],
) -> dict[str, list[list[int]]]:
    """icefall's attention-decoder method on an HLG lattice (FSA ``i`` is utterance ``order[i]``).

    Returns key → word-id sequences per lattice FSA (lattice order)."""
    lattice, nbest = C._bounded_nbest(lattice, opts, names, "attention-decoder")
    num = lattice.shape[0]
    keys = [f"lm_scale_{l}_attention_scale_{a}" for l in opts.lm_scales for a in aopts.attention_scales]
    if not nbest.word_seqs:
        return {k: [[] for _ in range(num)] for k in keys}
    C._score_nbest(lattice, nbest, True, opts, names)
    am, lm = nbest.am_scores, nbest.tot_scores - nbest.am_scores
    att = torch.full((len(nbest.word_seqs),), -math.inf, dtype=torch.float64)
    for i in range(num):
        rows = (nbest.utt == i).nonzero().flatten().tolist()
        u = int(order[i])
        seqs = [word_tokens(nbest.word_seqs[r]) for r in rows]
        att[rows] = score_sequences(decoder, memory[u], int(memory_lens[u]), seqs, sos_eos).double()
    return {f"lm_scale_{l}_attention_scale_{a}": C._pick_best(nbest, am + l * lm + a * att, num)
            for l in opts.lm_scales for a in aopts.attention_scales}


def decode_attention(
    model, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, log_probs: torch.Tensor,
    methods: Sequence[str], graphs: C.DecodingGraphs, opts: C.SearchOptions, aopts: AttentionOptions,
    word_tokens: Callable[[list[int]], list[int]] | None = None, cut_ids: Sequence[str] | None = None,
) -> dict[str, dict[str, list[list[str]]]]:
    """Run the attention methods in ``methods`` on one batch (``model`` has a decoder).

    Args:
      encoder_out: ``[B, T, D]``, encoder_lens: ``[B]``; log_probs: ``[B, T, V]`` (CTC).
      word_tokens: word ids → token ids (attention-decoder scores word sequences of the lattice).
    Returns:
      method → key → word hypotheses in input order.
    """
    decoder, sos_eos = model.decoder, model.config.sos_eos
    if decoder is None and set(methods) - {"ctc-prefix-beam-search"}:
        raise ValueError(f"{sorted(set(methods) & set(ATTENTION_METHODS))} need a model with an attention "
                         f"decoder (train with --num-decoder-layers > 0)")
    results: dict[str, dict[str, list[list[str]]]] = {}
    B = log_probs.shape[0]
    nbests = None
    if {"ctc-prefix-beam-search", "attention-rescoring"} & set(methods):
        nbests = [ctc_prefix_beam_search(log_probs[b, : int(encoder_lens[b])], aopts.beam) for b in range(B)]
    for method in methods:
        if method == "ctc-prefix-beam-search":
            ids = [list(nb[0][0]) if nb else [] for nb in nbests]
        elif method == "attention":
            ids = [attention_beam_search(decoder, encoder_out[b], int(encoder_lens[b]), sos_eos, aopts.beam)
                   for b in range(B)]
        elif method == "attention-rescoring":
            ids = [attention_rescoring(nbests[b], decoder, encoder_out[b], int(encoder_lens[b]), sos_eos,
                                       aopts.ctc_weight) for b in range(B)]
        elif method == "attention-decoder":
            if graphs.HLG is None:
                raise ValueError("attention-decoder needs HLG; load graphs with it in methods")
            lattice, order = C.get_lattice(log_probs, encoder_lens, graphs.HLG, opts, cut_ids)
            names = [C._name(cut_ids, u) for u in order.tolist()]
            per_key = attention_decoder_rescoring(lattice, order, encoder_out, encoder_lens, decoder, sos_eos,
                                                  word_tokens, opts, aopts, names)
            results[method] = {k: C._word_ids_to_words(graphs, C._unsort(v, order)) for k, v in per_key.items()}
            continue
        else:
            raise ValueError(f"unknown attention decoding method {method!r}; known: {ATTENTION_METHODS}")
        results[method] = {method: [graphs.tokens.words(s) for s in ids]}
    return results
