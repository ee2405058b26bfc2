"""Compare the results of several experiment dirs (e.g. fbank against SSL features), side by side.

Usage:
  python -m w2v.bin.compare_results exp/ctc_fbank exp/ctc_ssl_wav2vec2_L2 [...] \
    [--dev-sets dev-clean dev-other] --out exp/COMPARISON.md

Runs are grouped by label budget (``label_budget`` in their results.json, ``all`` if absent); in
each group the fbank run (else the first dir) is the baseline, and every other cell shows its change
from it with a 95% bootstrap interval computed on both runs' recogs files. The lm scale of each
rescoring method is chosen on --dev-sets (results of those sets are not rows of the table); a run
without dev results falls back to the best scale on test, and its cells say so. Writes the
markdown to --out (and prints it), one plot per test set beside it (``<out stem>-<test set>.png``)
and, with more than one label budget, the error rate against the budget
(``<out stem>-budgets-<test set>.png``), and against the encoder layer when an encoder was probed
at several (``<out stem>-layers-<test set>.png``). Dirs without results.json are skipped with a warning.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from w2v.scoring.results import (BUDGET_METHODS, comparison_markdown, layer_points, load_results,
                                 plot_budgets, plot_comparison, plot_layers, run_budget)
from w2v.utils import atomic_write_text, setup_logging


def load_runs(exp_dirs: list[Path]) -> dict[str, list[dict]]:
    """exp dir name → its results.json entries; dirs without results are left out."""
    runs = {}
    for d in exp_dirs:
        entries = load_results(d / "results.json")
        if entries:
            runs[d.name] = entries
        else:
            logging.warning("%s has no results.json; left out", d)
    return runs


def write_plots(runs: dict[str, list[dict]], out: Path, dev_sets: list[str]) -> None:
    test_sets = sorted({e["test_set"] for entries in runs.values() for e in entries} - set(dev_sets))
    for test_set in test_sets:
        plot_comparison(runs, test_set, out.with_name(f"{out.stem}-{test_set}.png"), dev_sets)
        if layer_points(runs, test_set):
            plot_layers(runs, test_set, out.with_name(f"{out.stem}-layers-{test_set}.png"))
    if len({run_budget(n, e) for n, e in runs.items()}) < 2:
        return
    for test_set in test_sets:
        if any(e["test_set"] == test_set and e["decoding_method"] in BUDGET_METHODS
               for entries in runs.values() for e in entries):
            plot_budgets(runs, test_set, out.with_name(f"{out.stem}-budgets-{test_set}.png"))


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", nargs="+", type=Path)
    p.add_argument("--dev-sets", nargs="*", default=[],
                   help="test sets that are dev sets: used only to choose each method's lm scale")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    runs = load_runs(a.exp_dirs)
    if not runs:
        raise SystemExit(f"none of {[str(d) for d in a.exp_dirs]} has results to compare")
    text = comparison_markdown(runs, dev_sets=a.dev_sets, exp_dirs={d.name: d for d in a.exp_dirs})
    atomic_write_text(a.out, text)
    write_plots(runs, a.out, a.dev_sets)
    print(text, end="")


if __name__ == "__main__":
    main()
