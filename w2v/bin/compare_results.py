"""Compare the results of several experiment dirs (e.g. fbank against SSL features), side by side.

Usage:
  python -m w2v.bin.compare_results exp/ctc_fbank exp/ctc_ssl_wav2vec2_L2 [...] --out exp/COMPARISON.md

The first dir is the baseline: every other column also shows its change from it. Writes the
markdown table to --out (and prints it) and one plot per test set beside it
(``<out stem>-<test set>.png``). Dirs without results.json are skipped with a warning.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from w2v.scoring.results import comparison_markdown, load_results, plot_comparison
from w2v.utils import atomic_write_text, setup_logging


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    runs = {}
    for d in a.exp_dirs:
        entries = load_results(d / "results.json")
        if entries:
            runs[d.name] = entries
        else:
            logging.warning("%s has no results.json; left out", d)
    if not runs:
        raise SystemExit(f"none of {[str(d) for d in a.exp_dirs]} has results to compare")
    text = comparison_markdown(runs)
    atomic_write_text(a.out, text)
    for test_set in sorted({e["test_set"] for entries in runs.values() for e in entries}):
        plot_comparison(runs, test_set, a.out.with_name(f"{a.out.stem}-{test_set}.png"))
    print(text, end="")


if __name__ == "__main__":
    main()
