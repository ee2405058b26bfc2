"""``results.json`` in an experiment dir, the RESULTS.md generated from it, and WER plots.

An entry is ``{test_set, decoding_method, feature_type, wer|cer, ins, del, sub, ref_words,
labels?}``; entries are keyed by (test_set, decoding_method, feature_type), a newer one
replacing an older one. Rescoring sweeps put the scale into the method name
(``whole-lattice-rescoring/lm_scale_0.5``) and into ``labels``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from w2v.utils import atomic_path, atomic_write_text

KEY_FIELDS = ("test_set", "decoding_method", "feature_type")


def entry_key(entry: dict) -> tuple[str, str, str]:
    missing = [k for k in KEY_FIELDS if k not in entry]
    if missing:
        raise ValueError(f"results entry lacks {missing}: {entry}")
    return tuple(str(entry[k]) for k in KEY_FIELDS)


def make_entry(test_set: str, decoding_method: str, feature_type: str, stats,
               labels: dict | None = None) -> dict:
    """A results.json entry from an :class:`~w2v.scoring.wer.ErrorStats`."""
    entry = {
        "test_set": test_set,
        "decoding_method": decoding_method,
        "feature_type": feature_type,
        stats.metric: round(stats.rate, 2),
        "ins": stats.ins,
        "del": stats.dels,
        "sub": stats.subs,
        "ref_words": stats.ref_len,
    }
    if labels:
        entry["labels"] = dict(labels)
    return entry


def load_results(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    return data


def merge_results(old: Iterable[dict], new: Iterable[dict]) -> list[dict]:
    """Entries of ``old`` and ``new`` by key, ``new`` winning; sorted by key."""
    merged = {entry_key(e): e for e in old}
    for e in new:
        merged[entry_key(e)] = e
    return [merged[k] for k in sorted(merged)]


def update_results(exp_dir: str | os.PathLike, new: Iterable[dict]) -> list[dict]:
    """Merge ``new`` into ``exp_dir/results.json`` (atomically) and regenerate RESULTS.md."""
    exp_dir = Path(exp_dir)
    path = exp_dir / "results.json"
    merged = merge_results(load_results(path), new)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    atomic_write_text(exp_dir / "RESULTS.md", results_markdown(merged, title=f"Results: {exp_dir.name}"))
    return merged


def metric_of(entry: dict) -> str:
    return "cer" if "cer" in entry else "wer"


def results_markdown(entries: list[dict], title: str = "Results") -> str:
    """One table per test set, rows sorted by error rate. Generated; never edit by hand."""
    lines = [f"# {title}", "", "<!-- generated from results.json; do not edit -->"]
    by_test: dict[str, list[dict]] = {}
    for e in entries:
        by_test.setdefault(e["test_set"], []).append(e)
    for test_set in sorted(by_test):
        rows = sorted(by_test[test_set], key=lambda e: (e[metric_of(e)], e["decoding_method"]))
        metric = metric_of(rows[0]).upper()
        lines += [
            "",
            f"## {test_set}",
            "",
            f"| decoding method | feature type | {metric} (%) | ins | del | sub | ref words |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for e in rows:
            lines.append(
                f"| {e['decoding_method']} | {e['feature_type']} | {e[metric_of(e)]:.2f} | "
                f"{e['ins']} | {e['del']} | {e['sub']} | {e['ref_words']} |"
            )
    return "\n".join(lines) + "\n"


def plot_results(entries: list[dict], test_set: str, path: str | os.PathLike) -> Path:
    """Bar chart of error rate per decoding method (and lm scale) for one test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in entries if e["test_set"] == test_set]
    if not rows:
        raise ValueError(f"no results for test set {test_set!r}")
    rows.sort(key=lambda e: (e["feature_type"], e["decoding_method"]))
    metric = metric_of(rows[0])
    labels = [f"{e['decoding_method']} [{e['feature_type']}]" for e in rows]
    values = [e[metric] for e in rows]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    ax.barh(range(len(rows)), values)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.upper()} (%)")
    ax.set_title(test_set)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
