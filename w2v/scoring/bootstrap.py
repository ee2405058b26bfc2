"""Is system b really better than system a? A paired bootstrap over utterances (Bisani & Ney, 2004).

Both systems are scored on the same utterances; each replication resamples utterance indices with
replacement and takes the difference of the pooled error rates,
``100 · (Σ errors_b − Σ errors_a) / Σ ref_len`` over the resampled utterances. The 2.5th and 97.5th
percentiles of those differences are the 95% interval; one that excludes 0 is a difference the
test set's utterances cannot explain away. With few labels (minutes of transcribed speech) the
differences between front ends are small, and this interval says which of them to believe.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Sequence

import kaldialign
import numpy as np

from w2v.scoring.wer import to_chars

_LINE = re.compile(r"^(.*?):\t(ref|hyp)=(\[.*\])$")
_CHUNK_ELEMENTS = 4_000_000  # resampled indices held at once: 32 MB of int64


def read_recogs(path: str | os.PathLike) -> dict[str, tuple[list[str], list[str]]]:
    """A recogs file (:func:`w2v.scoring.wer.write_recogs`) back as cut_id → (ref words, hyp words)."""
    path = Path(path)
    sides: dict[str, dict[str, list[str]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"{path}:{n}: not a `cut_id:\\tref=[...]` or `cut_id:\\thyp=[...]` line")
        cut_id, side, words = m.groups()
        if side in sides.setdefault(cut_id, {}):
            raise ValueError(f"{path}:{n}: a second {side} for {cut_id}")
        sides[cut_id][side] = list(ast.literal_eval(words))
    lacking = [c for c, s in sides.items() if len(s) != 2]
    if lacking:
        raise ValueError(f"{path}: {len(lacking)} cuts lack a ref or a hyp line, e.g. {lacking[:3]}")
    return {c: (s["ref"], s["hyp"]) for c, s in sides.items()}


def paired_utterances(recogs_a: dict, recogs_b: dict, name_a: str = "a", name_b: str = "b"
                      ) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """(refs, hyps_a, hyps_b) in cut id order; refuses two systems not scored on the same utterances."""
    only_a, only_b = sorted(recogs_a.keys() - recogs_b.keys()), sorted(recogs_b.keys() - recogs_a.keys())
    if only_a or only_b:
        raise ValueError(f"{name_a} and {name_b} hold different cuts: {len(only_a)} only in the first "
                         f"(e.g. {only_a[:3]}), {len(only_b)} only in the second (e.g. {only_b[:3]})")
    cuts = sorted(recogs_a)
    differ = [c for c in cuts if recogs_a[c][0] != recogs_b[c][0]]
    if differ:
        raise ValueError(f"{name_a} and {name_b} have different references for {len(differ)} cuts, "
                         f"e.g. {differ[:3]}")
    return ([recogs_a[c][0] for c in cuts], [recogs_a[c][1] for c in cuts],
            [recogs_b[c][1] for c in cuts])


def utterance_errors(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]],
                     metric: str = "wer") -> tuple[np.ndarray, np.ndarray]:
    """(errors [N], ref lengths [N]) per utterance: words, or characters (``to_chars``) for CER."""
    if metric not in ("wer", "cer"):
        raise ValueError(f"metric must be 'wer' or 'cer', got {metric!r}")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    unit = to_chars if metric == "cer" else list
    errors, lengths = [], []
    for ref, hyp in zip(refs, hyps):
        ref, hyp = unit(ref), unit(hyp)
        errors.append(kaldialign.edit_distance(ref, hyp)["total"])
        lengths.append(len(ref))
    return np.asarray(errors, dtype=np.int64), np.asarray(lengths, dtype=np.int64)


def _rate(errors: int, ref_len: int) -> float:
    # as ErrorStats.rate: an empty reference counts its insertions as 100% each
    return 100.0 * errors / max(ref_len, 1)


def _resampled_diffs(diff: np.ndarray, lengths: np.ndarray, replications: int, seed: int) -> np.ndarray:
    """[replications] differences of pooled rates, in percentage points, over resampled utterances."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    out = []
    for start in range(0, replications, per_chunk):
        idx = rng.integers(0, n, size=(min(per_chunk, replications - start), n))
        out.append(100.0 * diff[idx].sum(axis=1) / np.maximum(lengths[idx].sum(axis=1), 1))
    return np.concatenate(out)


def paired_bootstrap(refs: Sequence[Sequence[str]], hyps_a: Sequence[Sequence[str]],
                     hyps_b: Sequence[Sequence[str]], metric: str = "wer",
                     replications: int = 10000, seed: int = 0) -> dict:
    """Error rates of a and b on the same utterances and the 95% interval of their difference.

    Args:
      refs, hyps_a, hyps_b: word lists, one per utterance, in the same order.
      metric: "wer", or "cer" (scored on :func:`w2v.scoring.wer.to_chars` units).
    Returns:
      ``{"rate_a", "rate_b", "diff", "lo", "hi", "utterances", "replications"}``: rates in percent,
      ``diff`` = rate_b − rate_a in absolute percentage points (negative: b is better), [lo, hi]
      the percentile interval of the bootstrap differences.
    """
    if len(hyps_b) != len(refs):
        raise ValueError(f"{len(refs)} references but {len(hyps_b)} hypotheses of the second system")
    if not refs:
        raise ValueError("no utterances to compare")
    if replications < 1:
        raise ValueError(f"replications must be positive, got {replications}")
    err_a, lengths = utterance_errors(refs, hyps_a, metric)
    err_b, _ = utterance_errors(refs, hyps_b, metric)
    diffs = _resampled_diffs(err_b - err_a, lengths, replications, seed)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    rate_a, rate_b = _rate(int(err_a.sum()), int(lengths.sum())), _rate(int(err_b.sum()), int(lengths.sum()))
    return {"rate_a": rate_a, "rate_b": rate_b, "diff": rate_b - rate_a, "lo": float(lo), "hi": float(hi),
            "utterances": len(refs), "replications": replications}


def compare_recogs(path_a: str | os.PathLike, path_b: str | os.PathLike, metric: str = "wer",
                   replications: int = 10000, seed: int = 0) -> dict:
    """:func:`paired_bootstrap` of two recogs files; ValueError naming both unless they hold the
    same cuts with the same references."""
    refs, hyps_a, hyps_b = paired_utterances(read_recogs(path_a), read_recogs(path_b), str(path_a), str(path_b))
    return paired_bootstrap(refs, hyps_a, hyps_b, metric, replications, seed)


def excludes_zero(result: dict) -> bool:
    """Whether the 95% interval of :func:`paired_bootstrap` lies wholly on one side of 0."""
    return result["lo"] > 0 or result["hi"] < 0
