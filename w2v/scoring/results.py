"""``results.json`` in an experiment dir, the RESULTS.md generated from it, and WER plots.

An entry is ``{test_set, decoding_method, feature_type, checkpoint, wer|cer, ins, del, sub,
ref_words, labels?}``; entries are keyed by (test_set, decoding_method, feature_type, checkpoint),
a newer one replacing an older one, so results of several checkpoints (``epoch-25-avg-3``,
``epoch-20-avg-1``) live side by side. Rescoring sweeps put the scale into the method name
(``whole-lattice-rescoring/lm_scale_0.5``) and into ``labels``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from w2v.utils import atomic_path, atomic_write_text

KEY_FIELDS = ("test_set", "decoding_method", "feature_type", "checkpoint")


def entry_key(entry: dict) -> tuple[str, ...]:
    missing = [k for k in KEY_FIELDS[:3] if k not in entry]
    if missing:
        raise ValueError(f"results entry lacks {missing}: {entry}")
    # entries written before checkpoints were recorded have none
    return tuple(str(entry.get(k, "")) for k in KEY_FIELDS)


def checkpoint_label(labels: dict) -> str:
    """``epoch-25-avg-3`` from ``{"epoch": 25, "avg": 3}`` (icefall's file suffix); "" without."""
    if "epoch" in labels:
        return f"epoch-{labels['epoch']}-avg-{labels.get('avg', 1)}"
    return ""


def make_entry(test_set: str, decoding_method: str, feature_type: str, stats,
               labels: dict | None = None, checkpoint: str = "") -> dict:
    """A results.json entry from an :class:`~w2v.scoring.wer.ErrorStats`."""
    entry = {
        "test_set": test_set,
        "decoding_method": decoding_method,
        "feature_type": feature_type,
        "checkpoint": checkpoint,
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


def update_results(exp_dir: str | os.PathLike, new: Iterable[dict], replace: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """Merge ``new`` into ``exp_dir/results.json`` (atomically) and regenerate RESULTS.md.

    ``replace``: (test_set, checkpoint) pairs whose old entries go first, whatever their method:
    a decoding run of a checkpoint replaces all its results on that test set, so that none of an
    earlier model with the same epoch number (retrained after a truncated file) survives.
    """
    exp_dir = Path(exp_dir)
    path = exp_dir / "results.json"
    drop = set(replace)
    old = [e for e in load_results(path) if (e["test_set"], e.get("checkpoint", "")) not in drop]
    merged = merge_results(old, new)
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
            f"| decoding method | feature type | checkpoint | {metric} (%) | ins | del | sub | ref words |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for e in rows:
            lines.append(
                f"| {e['decoding_method']} | {e['feature_type']} | {e.get('checkpoint') or '-'} | {e[metric_of(e)]:.2f} | "
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
    return _save_png(fig, path)


def newest_checkpoint(entries: Iterable[dict]) -> list[dict]:
    """The entries of the latest checkpoint decoded (largest epoch, then avg)."""
    entries = list(entries)

    def order(e: dict) -> tuple[int, int]:
        labels = e.get("labels") or {}
        return int(labels.get("epoch", 0)), int(labels.get("avg", 0))

    last = max((order(e) for e in entries), default=(0, 0))
    return [e for e in entries if order(e) == last]


def best_per_method(entries: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(test_set, method) → the entry with the lowest error over that method's lm scales."""
    best: dict[tuple[str, str], dict] = {}
    for e in entries:
        key = (e["test_set"], e["decoding_method"].split("/")[0])
        if key not in best or e[metric_of(e)] < best[key][metric_of(best[key])]:
            best[key] = e
    return best


def comparison_markdown(runs: dict[str, list[dict]], title: str = "Feature comparison") -> str:
    """One column per run (exp dir name → its results.json entries), one row per test set and
    decoding method (best lm scale); after the first column, each cell also shows the absolute
    change from the first run (the baseline, e.g. fbank). A run's column holds its latest
    checkpoint's results, named under the table. Generated; never edit by hand."""
    if not runs:
        raise ValueError("no runs to compare")
    runs = {name: newest_checkpoint(entries) for name, entries in runs.items()}
    names = list(runs)
    best = {name: best_per_method(entries) for name, entries in runs.items()}
    keys = sorted({k for b in best.values() for k in b})
    lines = [f"# {title}", "", "<!-- generated from the runs' results.json; do not edit -->", "",
             "Best lm_scale per method; (±x) is the change from the first column.", ""]
    features = [sorted({e["feature_type"] for e in runs[n]}) for n in names]
    # A run named ctc_<feature type> needs no second mention of its features.
    heads = [n if f == [n.removeprefix("ctc_")] else f"{n} ({', '.join(f)})" for n, f in zip(names, features)]
    lines.append("| test set | decoding method | " + " | ".join(heads) + " |")
    lines.append("|---|---|" + "---:|" * len(names))
    for test_set, method in keys:
        cells, base = [], None
        for i, n in enumerate(names):
            e = best[n].get((test_set, method))
            if e is None:
                cells.append("-")
                continue
            rate = e[metric_of(e)]
            if i == 0:
                base = rate
                cells.append(f"{rate:.2f}")
            else:
                cells.append(f"{rate:.2f}" + ("" if base is None else f" ({rate - base:+.2f})"))
        metric = next(metric_of(b[(test_set, method)]) for b in best.values() if (test_set, method) in b)
        lines.append(f"| {test_set} | {method} ({metric.upper()}) | " + " | ".join(cells) + " |")
    lines += ["", "Checkpoints: " + ", ".join(
        f"{n} {runs[n][0].get('checkpoint') or '(not recorded)'}" for n in names)]
    return "\n".join(lines) + "\n"


def plot_comparison(runs: dict[str, list[dict]], test_set: str, path: str | os.PathLike) -> Path:
    """Grouped bars: error rate per decoding method (best lm scale), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {n: best_per_method(newest_checkpoint(e)) for n, e in runs.items()}
    methods = sorted({m for b in best.values() for (t, m) in b if t == test_set})
    if not methods:
        raise ValueError(f"no results for test set {test_set!r}")
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(methods) * len(runs) + 1.5))
    metric = "wer"
    for i, (name, b) in enumerate(best.items()):
        rows = [(j, b[(test_set, m)]) for j, m in enumerate(methods) if (test_set, m) in b]
        if rows:
            metric = metric_of(rows[0][1])
        ax.barh([j + i * width for j, _ in rows], [e[metric_of(e)] for _, e in rows], height=width,
                label=name)
    ax.set_yticks([j + 0.4 - width / 2 for j in range(len(methods))], methods, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.upper()} (%)")
    ax.set_title(f"{test_set}: best lm_scale per method")
    ax.legend(fontsize=7)
    return _save_png(fig, path)


def _save_png(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
