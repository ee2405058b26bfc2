"""Everything a decoding run leaves in the experiment dir, from its hypotheses."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

from w2v.scoring.results import checkpoint_label, make_entry, plot_results, update_results
from w2v.scoring.wer import ErrorStats, Result, score_test_set


def report_decoding(
    exp_dir: str | os.PathLike,
    test_set: str,
    hyps: dict[str, dict[str, Sequence[Result]]],
    feature_type: str,
    metric: str = "wer",
    labels: dict | None = None,
    plot: bool = True,
) -> dict[str, dict[str, ErrorStats]]:
    """Score ``hyps`` (method → key → results) for one test set.

    Writes ``exp_dir/<method>/{recogs,errs,wer-summary}-<test_set>-<key>-<checkpoint>.txt``
    (``checkpoint`` is ``epoch-E-avg-A`` from ``labels``), merges the totals into
    ``exp_dir/results.json`` (replacing every earlier result of this checkpoint on this test set),
    regenerates ``RESULTS.md`` and ``exp_dir/wer-<test_set>.png``.
    Returns:
      method → key → totals.
    """
    exp_dir = Path(exp_dir)
    checkpoint = checkpoint_label(labels or {})
    all_stats: dict[str, dict[str, ErrorStats]] = {}
    entries = []
    for method, per_key in hyps.items():
        stats = score_test_set(exp_dir / method, test_set, per_key, metric, suffix=checkpoint)
        all_stats[method] = stats
        for key, s in stats.items():
            name = method if key == method else f"{method}/{key}"
            extra = dict(labels or {})
            extra.update(scales_of(key))
            entries.append(make_entry(test_set, name, feature_type, s, extra or None, checkpoint))
            logging.info("%s %s %s: %s", test_set, method, key, s.header())
    merged = update_results(exp_dir, entries, replace=[(test_set, checkpoint)])
    if plot and entries:
        plot_results(merged, test_set, exp_dir / f"{metric}-{test_set}.png")
    return all_stats


def scales_of(key: str) -> dict[str, float]:
    """``lm_scale_0.5`` → {lm_scale: 0.5}; ``lm_scale_0.5_attention_scale_0.3`` → both; else {}."""
    m = re.fullmatch(r"lm_scale_([\d.]+)(?:_attention_scale_([\d.]+))?", key)
    if m is None:
        return {}
    return {"lm_scale": float(m[1]), **({"attention_scale": float(m[2])} if m[2] else {})}


def format_table(stats: dict[str, dict[str, ErrorStats]], test_set: str) -> str:
    """A plain-text table of one run's totals, best first, for the console."""
    rows = [
        (s.rate, method if key == method else f"{method}/{key}", s)
        for method, per_key in stats.items()
        for key, s in per_key.items()
    ]
    rows.sort(key=lambda r: (r[0], r[1]))
    metric = rows[0][2].metric.upper() if rows else "WER"
    width = max([len(r[1]) for r in rows] + [15])
    lines = [f"{test_set}", f"{'decoding method':<{width}}  {metric:>6}  {'ins':>5} {'del':>5} {'sub':>5} {'ref':>6}"]
    for rate, name, s in rows:
        lines.append(f"{name:<{width}}  {rate:6.2f}  {s.ins:5d} {s.dels:5d} {s.subs:5d} {s.ref_len:6d}")
    return "\n".join(lines)
