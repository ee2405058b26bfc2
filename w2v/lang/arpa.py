"""ARPA n-gram estimation: interpolated modified Kneser-Ney (Chen & Goodman), no pruning.

Written here because neither SRILM nor KenLM is installed. Sentences are padded with
``<s>``/``</s>``; lower orders use continuation counts (distinct left extensions) except for
n-grams starting with ``<s>``, which keep their raw counts, as in SRILM/KenLM. The unigram
level is interpolated with a uniform distribution over the vocabulary (``<unk>`` included), so
every context's distribution sums to one with the ARPA backoff weights (log10). A given
vocabulary (words.txt) is the unigram list: a word of it that the text never uses still gets the
uniform share, so the decoding graph can reach it (a Mandarin lexicon's single characters, words
added with ``--extra-words``); without one, kaldilm would drop the word from G.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from w2v.utils import atomic_path

BOS, EOS = "<s>", "</s>"
NO_PROB = -99.0  # log10 probability ARPA files give <s>, which is never predicted

Ngram = tuple[str, ...]


@dataclass
class ArpaLM:
    """An n-gram model as ARPA holds it: per order, n-gram → (log10 prob, log10 backoff)."""

    order: int
    ngrams: list[dict[Ngram, tuple[float, float]]] = field(default_factory=list)  # index n-1

    def vocab(self) -> list[str]:
        return [g[0] for g in self.ngrams[0]]

    def log10_prob(self, context: Ngram, word: str) -> float:
        """log10 p(word | context) following backoff; the context is cut to order - 1 words."""
        context = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        bow = 0.0
        while True:
            g = context + (word,)
            hit = self.ngrams[len(g) - 1].get(g)
            if hit is not None:
                return bow + hit[0]
            if not context:
                raise KeyError(f"word {word!r} not in the unigrams")
            ctx = self.ngrams[len(context) - 1].get(context)
            bow += ctx[1] if ctx else 0.0
            context = context[1:]


def _discounts(adjusted: dict[Ngram, int], order: int) -> tuple[float, float, float]:
    """Modified-KN discounts D1, D2, D3+ from the count-of-counts of one order.

    Small corpora lack some count-of-counts or give discounts out of range; then one
    absolute discount (plain KN, or 0.5 when even that is undefined) is used for all counts.
    """
    coc = Counter(c for c in adjusted.values() if c <= 4)
    t1, t2, t3, t4 = (coc.get(k, 0) for k in (1, 2, 3, 4))
    if t1 > 0 and t2 > 0:
        y = t1 / (t1 + 2 * t2)
        if t3 > 0 and t4 > 0:
            d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
            if all(0 < dk <= k for k, dk in enumerate(d, 1)):
                return d
        logging.debug("order %d: count-of-counts %s, falling back to plain KN", order, (t1, t2, t3, t4))
        return (y, y, y)
    return (0.5, 0.5, 0.5)


def estimate_kn(
    sentences: Iterable[list[str]],
    order: int = 3,
    unk: str = "<UNK>",
    vocab: set[str] | None = None,
) -> ArpaLM:
    """Estimate an interpolated modified Kneser-Ney model.

    Args:
      sentences: word lists, without ``<s>``/``</s>``.
      order: N (1 = unigram).
      unk: unknown-word symbol; words outside ``vocab`` (when given) are mapped to it.
      vocab: the unigrams: every word of it is in the model, seen in ``sentences`` or not.
    Returns:
      the model as ARPA would store it.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    raw: list[Counter] = [Counter() for _ in range(order)]
    for words in sentences:
        if vocab is not None:
            words = [w if w in vocab else unk for w in words]
        padded = [BOS, *words, EOS]
        for n in range(1, order + 1):
            c = raw[n - 1]
            for i in range(len(padded) - n + 1):
                c[tuple(padded[i:i + n])] += 1
    if not raw[0]:
        raise ValueError("no sentences to estimate an n-gram model from")

    # Adjusted counts: raw at the top order and for n-grams starting with <s>; elsewhere the
    # number of distinct words seen to the left.
    adjusted: list[dict[Ngram, int]] = [dict() for _ in range(order)]
    adjusted[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):
        left = Counter(g[1:] for g in raw[n])
        adj = adjusted[n - 1]
        for g, c in raw[n - 1].items():
            adj[g] = c if g[0] == BOS else left[g]
    adjusted[0].pop((BOS,), None)
    adjusted[0].setdefault((unk,), 0)
    for w in sorted(vocab or ()):
        if w != BOS:
            adjusted[0].setdefault((w,), 0)

    probs: list[dict[Ngram, float]] = [dict() for _ in range(order)]
    gammas: list[dict[Ngram, float]] = [dict() for _ in range(order)]  # by context, order n-1
    for n in range(1, order + 1):
        adj = adjusted[n - 1]
        d1, d2, d3 = _discounts({g: c for g, c in adj.items() if c > 0}, n)
        total: dict[Ngram, int] = defaultdict(int)
        mass: dict[Ngram, float] = defaultdict(float)
        for g, c in adj.items():
            h = g[:-1]
            total[h] += c
            if c > 0:
                mass[h] += d1 if c == 1 else d2 if c == 2 else d3
        gamma = {h: mass[h] / total[h] for h in total}
        gammas[n - 1] = gamma
        uniform = 1.0 / len(adjusted[0])
        p = probs[n - 1]
        for g, c in adj.items():
            h = g[:-1]
            d = 0.0 if c == 0 else d1 if c == 1 else d2 if c == 2 else d3
            lower = uniform if n == 1 else probs[n - 2][g[1:]]
            p[g] = (c - d) / total[h] + gamma[h] * lower

    lm = ArpaLM(order=order)
    for n in range(1, order + 1):
        bows = gammas[n] if n < order else {}
        table: dict[Ngram, tuple[float, float]] = {}
        if n == 1:
            table[(BOS,)] = (NO_PROB, _log10(bows.get((BOS,), 1.0)))
        for g, pr in probs[n - 1].items():
            table[g] = (_log10(pr), _log10(bows.get(g, 1.0)))
        lm.ngrams.append(dict(sorted(table.items())))
    return lm


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else NO_PROB


def write_arpa(lm: ArpaLM, path: str | os.PathLike) -> None:
    """Write ``lm`` as an ARPA file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n, table in enumerate(lm.ngrams, 1):
            f.write(f"ngram {n}={len(table)}\n")
        for n, table in enumerate(lm.ngrams, 1):
            f.write(f"\n\\{n}-grams:\n")
            for g, (lp, bow) in table.items():
                if n < lm.order and bow != 0.0:
                    f.write(f"{lp:.6f}\t{' '.join(g)}\t{bow:.6f}\n")
                else:
                    f.write(f"{lp:.6f}\t{' '.join(g)}\n")
        f.write("\n\\end\\\n")


def read_arpa(path: str | os.PathLike) -> ArpaLM:
    """Read an ARPA file (any tool's) into an :class:`ArpaLM`."""
    lm = ArpaLM(order=0)
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("ngram ") or line == "\\data\\":
                continue
            if line == "\\end\\":
                break
            if line.startswith("\\") and line.endswith("-grams:"):
                n = int(line[1:].split("-")[0])
                lm.ngrams.append({})
                lm.order = n
                continue
            if n == 0:
                continue
            fields = line.split()
            lp = float(fields[0])
            g = tuple(fields[1:1 + n])
            bow = float(fields[1 + n]) if len(fields) > 1 + n else 0.0
            lm.ngrams[n - 1][g] = (lp, bow)
    if lm.order == 0:
        raise ValueError(f"no n-grams in {path}")
    return lm


def train_arpa(
    text: str | os.PathLike,
    out: str | os.PathLike,
    order: int = 3,
    unk: str = "<UNK>",
    vocab: set[str] | None = None,
) -> ArpaLM:
    """Estimate a KN model from a text file (one sentence per line) and write it as ARPA."""
    def sentences():
        with open(text, encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if words:
                    yield words

    lm = estimate_kn(sentences(), order=order, unk=unk, vocab=vocab)
    write_arpa(lm, out)
    logging.info(
        "Wrote %d-gram ARPA %s (%s)", order, out,
        ", ".join(f"{n}-grams: {len(t)}" for n, t in enumerate(lm.ngrams, 1)),
    )
    return lm
