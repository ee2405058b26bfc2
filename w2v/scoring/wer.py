"""Word/character error rates with kaldialign and icefall-style report files.

Per test set and key (decoding method or lm_scale):
  recogs-<test>-<key>.txt  ref/hyp of every utterance
  errs-<test>-<key>.txt    ``%WER 2.56% [1346 / 52576, 147 ins, 109 del, 1090 sub ]``, then
                           per-utterance alignments, SUBSTITUTIONS, DELETIONS, INSERTIONS and
                           PER-WORD STATS
  wer-summary-<test>.txt   every key, best first
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import kaldialign

from w2v.data.text import split_units
from w2v.utils import atomic_write_text

ERR = "*"
_WHOLE = re.compile(r"(<UNK>|<unk>)")  # the unknown word or token, also inside a word: one unit

# (cut_id, ref words, hyp words)
Result = tuple[str, list[str], list[str]]


@dataclass
class ErrorStats:
    ins: int
    dels: int
    subs: int
    ref_len: int
    metric: str = "wer"  # or "cer"

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def rate(self) -> float:
        """Error rate in percent; 0 for an empty reference with no insertions."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else 100.0 * self.errors
        return 100.0 * self.errors / self.ref_len

    def header(self) -> str:
        return (
            f"%{self.metric.upper()} {self.rate:.2f}% [{self.errors} / {self.ref_len}, "
            f"{self.ins} ins, {self.dels} del, {self.subs} sub ]"
        )


def to_chars(words: Sequence[str]) -> list[str]:
    """Words → scoring units for CER, the modelling units (:func:`w2v.data.text.split_units`).

    Each CJK character alone, a Latin run whole (``OK``: one unit, as wenet's ``compute-cer``
    counts English words in Mandarin text), ``<UNK>`` one unit.
    """
    return [u for w in words for piece in _WHOLE.split(w) if piece
            for u in ([piece] if _WHOLE.fullmatch(piece) else split_units(piece))]


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, str]]:
    """Levenshtein alignment; a missing side is ``*``."""
    return kaldialign.align(list(ref), list(hyp), ERR)


def error_stats(results: Sequence[Result], metric: str = "wer") -> tuple[ErrorStats, list]:
    """Count ins/del/sub over ``results``; returns (stats, per-utterance alignments)."""
    ins = dels = subs = ref_len = 0
    aligned = []
    for cut_id, ref, hyp in results:
        if metric == "cer":
            ref, hyp = to_chars(ref), to_chars(hyp)
        ali = align(ref, hyp)
        aligned.append((cut_id, ali))
        ref_len += len(ref)
        for r, h in ali:
            if r == ERR:
                ins += 1
            elif h == ERR:
                dels += 1
            elif r != h:
                subs += 1
    return ErrorStats(ins, dels, subs, ref_len, metric), aligned


def write_recogs(path: str | os.PathLike, results: Sequence[Result]) -> None:
    lines = []
    for cut_id, ref, hyp in sorted(results, key=lambda r: r[0]):
        lines.append(f"{cut_id}:\tref={ref}\n{cut_id}:\thyp={hyp}\n")
    atomic_write_text(path, "".join(lines))


def write_error_stats(path: str | os.PathLike, test_set: str, key: str, results: Sequence[Result],
                      metric: str = "wer") -> ErrorStats:
    """Write an icefall-style errs file; returns the totals."""
    stats, aligned = error_stats(sorted(results, key=lambda r: r[0]), metric)
    subs: Counter = Counter()
    dels: Counter = Counter()
    ins: Counter = Counter()
    # word → [correct, ref->x errors, x->hyp errors]
    words: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    out = [stats.header(), f"Errors for {test_set} with {key}", "", "PER-UTT DETAILS: corr or (ref->hyp)"]
    for cut_id, ali in aligned:
        parts = []
        for r, h in ali:
            if r == h:
                parts.append(r)
                words[r][0] += 1
            else:
                parts.append(f"({r}->{h})")
                if r == ERR:
                    ins[h] += 1
                    words[h][2] += 1
                elif h == ERR:
                    dels[r] += 1
                    words[r][1] += 1
                else:
                    subs[(r, h)] += 1
                    words[r][1] += 1
                    words[h][2] += 1
        out.append(f"{cut_id}:\t{' '.join(parts)}")
    out += ["", "SUBSTITUTIONS: count ref -> hyp"]
    out += [f"{c}   {r} -> {h}" for (r, h), c in sorted(subs.items(), key=lambda x: (-x[1], x[0]))]
    out += ["", "DELETIONS: count ref"]
    out += [f"{c}   {w}" for w, c in sorted(dels.items(), key=lambda x: (-x[1], x[0]))]
    out += ["", "INSERTIONS: count hyp"]
    out += [f"{c}   {w}" for w, c in sorted(ins.items(), key=lambda x: (-x[1], x[0]))]
    out += ["", "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"]
    rows = sorted(words.items(), key=lambda x: (-(x[1][1] + x[1][2]), x[0]))
    for w, (corr, ref_err, hyp_err) in rows:
        out.append(f"{w}   {corr} {ref_err + hyp_err} {corr + ref_err} {corr + hyp_err}")
    atomic_write_text(path, "\n".join(out) + "\n")
    return stats


def write_wer_summary(path: str | os.PathLike, stats: dict[str, ErrorStats], metric: str = "wer") -> None:
    """``settings  WER`` lines, best key first."""
    lines = [f"settings\t{metric.upper()}"]
    for key, s in sorted(stats.items(), key=lambda kv: (kv[1].rate, kv[0])):
        lines.append(f"{key}\t{s.rate:.2f}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def score_test_set(
    out_dir: str | os.PathLike,
    test_set: str,
    hyps_by_key: dict[str, Sequence[Result]],
    metric: str = "wer",
    suffix: str = "",
) -> dict[str, ErrorStats]:
    """Write recogs/errs for every key and the summary; returns key → totals.

    ``suffix`` ends every file name (icefall's ``epoch-30-avg-10``), so that decoding another
    checkpoint writes beside, not over, this one's files.
    """
    out_dir = Path(out_dir)
    end = f"-{suffix}" if suffix else ""
    stats = {}
    for key, results in hyps_by_key.items():
        write_recogs(out_dir / f"recogs-{test_set}-{key}{end}.txt", results)
        stats[key] = write_error_stats(out_dir / f"errs-{test_set}-{key}{end}.txt", test_set, key, results, metric)
    write_wer_summary(out_dir / f"wer-summary-{test_set}{end}.txt", stats, metric)
    return stats
