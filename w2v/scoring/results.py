"""``results.json`` in an experiment dir, the RESULTS.md generated from it, and WER plots.

An entry is ``{test_set, decoding_method, feature_type, checkpoint, wer|cer, ins, del, sub,
ref_words, labels?}``; entries are keyed by (test_set, decoding_method, feature_type, checkpoint),
a newer one replacing an older one, so results of several checkpoints (``epoch-25-avg-3``,
``epoch-20-avg-1``) live side by side. Rescoring sweeps put the scale into the method name
(``whole-lattice-rescoring/lm_scale_0.5``) and into ``labels``. An entry may name the label
budget its model was trained with (``label_budget``: ``10m``, ``1h``, ``all``; top level or in
``labels``; missing = ``all``) and ``labels["train_minutes"]``; the comparison of several exp dirs
sets each run against the fbank run of the same budget, lm scales chosen on the dev sets.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Iterable

from w2v.scoring.bootstrap import compare_recogs, excludes_zero
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


def split_method(decoding_method: str) -> tuple[str, str | None]:
    """``whole-lattice-rescoring/lm_scale_0.5`` → (``whole-lattice-rescoring``, ``lm_scale_0.5``);
    a method without variants → (method, None)."""
    method, _, key = decoding_method.partition("/")
    return method, key or None


def recogs_path(exp_dir: str | os.PathLike, entry: dict) -> Path:
    """``<exp_dir>/<method>/recogs-<test_set>-<key>[-<checkpoint>].txt``, the utterances behind ``entry``."""
    method, key = split_method(entry["decoding_method"])
    end = f"-{entry['checkpoint']}" if entry.get("checkpoint") else ""
    return Path(exp_dir) / method / f"recogs-{entry['test_set']}-{key or method}{end}.txt"


def label_budget(entry: dict) -> str:
    """How much transcribed speech trained the model (``10m``, ``1h``, ``all``); ``all`` if unrecorded."""
    return str(entry.get("label_budget") or (entry.get("labels") or {}).get("label_budget") or "all")


def budget_minutes(budget: str) -> float:
    """``10m`` → 10, ``1h`` → 60, ``2.5`` → 2.5; ``all`` → inf (sorts last). The budgets stage 9
    trains on (:func:`w2v.data.subset.parse_budget`), so the report reads what the subset read."""
    from w2v.data.subset import parse_budget

    seconds = parse_budget(budget)
    return math.inf if seconds is None else seconds / 60


def run_budget(name: str, entries: Iterable[dict]) -> str:
    """The one label budget of a run (an exp dir holds one); ValueError if its entries disagree."""
    budgets = sorted({label_budget(e) for e in entries})
    if len(budgets) > 1:
        raise ValueError(f"run {name} mixes label budgets {budgets}; one exp dir holds one budget")
    return budgets[0] if budgets else "all"


def _errors(entry: dict) -> int:
    return entry["ins"] + entry["del"] + entry["sub"]


def _dev_choice(dev_entries: Iterable[dict], method: str) -> tuple[str, str] | None:
    """(variant key of ``method`` with the fewest errors summed over the dev sets, the dev sets'
    names joined by ``+``); None without dev results. Only keys decoded on every dev set compete."""
    errors: dict[str, dict[str, int]] = {}  # key → dev set → errors
    for e in dev_entries:
        m, key = split_method(e["decoding_method"])
        if m == method and key:
            errors.setdefault(key, {})[e["test_set"]] = _errors(e)
    sets = {s for per_set in errors.values() for s in per_set}
    totals = {k: sum(v.values()) for k, v in errors.items() if v.keys() == sets}
    if not totals:
        return None
    return min(totals, key=lambda k: (totals[k], k)), "+".join(sorted(sets))


def _with_source(entry: dict, source: str) -> dict:
    return {**entry, "labels": {**(entry.get("labels") or {}), "lm_scale_from": source}}


def choose_on_dev(entries: Iterable[dict], dev_sets: Iterable[str] = ()) -> list[dict]:
    """One run's test rows, one entry per (test set, method): for a method with lm_scale variants,
    the scale with the fewest errors on the dev set(s), recorded as ``labels["lm_scale_from"]``
    (the dev set names). A run without dev results for the method falls back to the best scale on
    each test set, recorded as ``"test"``. Methods without variants pass through; entries of the
    dev sets themselves are not test rows."""
    dev_sets = set(dev_sets)
    entries = list(entries)
    dev = [e for e in entries if e["test_set"] in dev_sets]
    chosen, variants = [], {}
    for e in entries:
        if e["test_set"] in dev_sets:
            continue
        method, key = split_method(e["decoding_method"])
        if key is None:
            chosen.append(e)
        else:
            variants.setdefault((e["test_set"], method), []).append(e)
    for (test_set, method), group in variants.items():
        choice = _dev_choice(dev, method)
        picked = [e for e in group if choice and split_method(e["decoding_method"])[1] == choice[0]]
        if picked:
            chosen.append(_with_source(picked[0], choice[1]))
        else:
            chosen.append(_with_source(min(group, key=lambda e: (_errors(e), e["decoding_method"])), "test"))
    return sorted(chosen, key=lambda e: (e["test_set"], e["decoding_method"]))


def _scale_note(entry: dict) -> str:
    """``lm_scale 0.6 on dev-clean`` or ``lm_scale 0.6 chosen on test``; "" without variants."""
    key = split_method(entry["decoding_method"])[1]
    if key is None:
        return ""
    scale = key.replace("lm_scale_", "lm_scale ").replace("_attention_scale_", ", attention_scale ")
    source = (entry.get("labels") or {}).get("lm_scale_from", "test")
    return f"{scale} chosen on test" if source == "test" else f"{scale} on {source}"


def _difference(base: dict, entry: dict, exp_dirs: dict[str, Path], names: tuple[str, str],
                replications: int) -> dict | None:
    """The paired bootstrap of two runs' entries on one test set; None when a recogs file is missing."""
    if names[0] not in exp_dirs or names[1] not in exp_dirs:
        return None
    paths = recogs_path(exp_dirs[names[0]], base), recogs_path(exp_dirs[names[1]], entry)
    if not all(p.is_file() for p in paths):
        logging.warning("no confidence interval for %s: missing %s", entry["decoding_method"],
                        [str(p) for p in paths if not p.is_file()])
        return None
    result = compare_recogs(*paths, metric=metric_of(entry), replications=replications)
    for rate, e, p in ((result["rate_a"], base, paths[0]), (result["rate_b"], entry, paths[1])):
        if abs(rate - e[metric_of(e)]) > 0.01:
            logging.warning("%s scores %.2f, but results.json says %.2f", p, rate, e[metric_of(e)])
    return result


def _cell(entry: dict | None, base: dict | None, diff: dict | None) -> str:
    """``rate``, then in parentheses the chosen scale and, against a baseline, Δ and its interval."""
    if entry is None:
        return "-"
    rate = entry[metric_of(entry)]
    notes = [_scale_note(entry)]
    if base is not None and diff is not None:
        star = "*" if excludes_zero(diff) else ""
        notes.append(f"Δ {diff['diff']:+.2f}{star}, 95% CI [{diff['lo']:+.2f}, {diff['hi']:+.2f}]")
    elif base is not None:
        notes.append(f"Δ {rate - base[metric_of(base)]:+.2f}, no CI: recogs missing")
    notes = [n for n in notes if n]
    return f"{rate:.2f}" + (f" ({'; '.join(notes)})" if notes else "")


def _baseline_run(names: list[str], runs: dict[str, list[dict]], baseline: str) -> str:
    """The first run whose feature type is ``baseline``, else the first run."""
    return next((n for n in names if any(e["feature_type"] == baseline for e in runs[n])), names[0])


def _column_head(name: str, entries: list[dict]) -> str:
    features = sorted({e["feature_type"] for e in entries})
    # A run named ctc_<feature type> needs no second mention of its features.
    return name if features == [name.removeprefix("ctc_")] else f"{name} ({', '.join(features)})"


def _budget_block(budget: str, names: list[str], chosen: dict[str, list[dict]], exp_dirs: dict[str, Path],
                  baseline: str, replications: int) -> list[str]:
    """``### Label budget <b>``, a table with the baseline run first, and the runs' checkpoints."""
    base = _baseline_run(names, chosen, baseline)
    names = [base] + [n for n in names if n != base]
    rows = {n: {(e["test_set"], split_method(e["decoding_method"])[0]): e for e in chosen[n]} for n in names}
    lines = ["", f"### Label budget {budget}", "",
             "| test set | decoding method | " + " | ".join(_column_head(n, chosen[n]) for n in names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for test_set, method in sorted({k for r in rows.values() for k in r}):
        b = rows[base].get((test_set, method))
        cells = [_cell(b, None, None)]
        for n in names[1:]:
            e = rows[n].get((test_set, method))
            diff = _difference(b, e, exp_dirs, (base, n), replications) if e and b else None
            cells.append(_cell(e, b, diff))
        metric = next(metric_of(r[(test_set, method)]) for r in rows.values() if (test_set, method) in r)
        lines.append(f"| {test_set} | {method} ({metric.upper()}) | " + " | ".join(cells) + " |")
    checkpoints = (next((e.get("checkpoint") for e in chosen[n] if e.get("checkpoint")), None) for n in names)
    lines += ["", "Checkpoints: " + ", ".join(f"{n} {c or '(not recorded)'}" for n, c in zip(names, checkpoints))]
    return lines


def comparison_markdown(runs: dict[str, list[dict]], title: str = "Feature comparison",
                        dev_sets: Iterable[str] = (), baseline: str = "fbank",
                        exp_dirs: dict[str, str | os.PathLike] | None = None,
                        replications: int = 10000) -> str:
    """Runs side by side (exp dir name → its results.json entries), one block per label budget.

    In a block, one row per test set and decoding method (lm scale chosen on ``dev_sets``:
    :func:`choose_on_dev`), one column per run of that budget, its latest checkpoint; the first
    column is the baseline (the run with feature type ``baseline``, else the first run), and every
    other cell shows Δ, its change from the baseline in absolute percentage points, with the 95%
    interval of a paired bootstrap over utterances on the recogs files under ``exp_dirs`` (name →
    exp dir; without them no interval), ``*`` where the interval excludes 0. Generated; never
    edit by hand.
    """
    if not runs:
        raise ValueError("no runs to compare")
    dev_sets = tuple(dev_sets)
    exp_dirs = {n: Path(d) for n, d in (exp_dirs or {}).items()}
    budgets = {n: run_budget(n, entries) for n, entries in runs.items()}
    chosen = {n: choose_on_dev(newest_checkpoint(entries), dev_sets) for n, entries in runs.items()}
    source = f"on the dev set(s) {', '.join(dev_sets)}" if dev_sets else "on test (no dev set given)"
    lines = [f"# {title}", "", "<!-- generated from the runs' results.json; do not edit -->", "",
             f"One block per label budget; its first column is the baseline ({baseline}, else the first run). "
             f"lm_scale chosen {source}, as each cell says. Δ: change from the baseline in absolute "
             f"percentage points, 95% CI of a paired bootstrap over utterances ({replications} replications); "
             "* marks an interval that excludes 0."]
    for budget in sorted(set(budgets.values()), key=lambda b: (budget_minutes(b), b)):
        names = [n for n in runs if budgets[n] == budget]
        lines += _budget_block(budget, names, chosen, exp_dirs, baseline, replications)
    return "\n".join(lines) + "\n"


def plot_comparison(runs: dict[str, list[dict]], test_set: str, path: str | os.PathLike,
                    dev_sets: Iterable[str] = ()) -> Path:
    """Grouped bars: error rate per decoding method (lm scale chosen on ``dev_sets``), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {n: {(e["test_set"], split_method(e["decoding_method"])[0]): e
                for e in choose_on_dev(newest_checkpoint(entries), dev_sets)} for n, entries in runs.items()}
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
    ax.set_title(f"{test_set}: lm_scale chosen on {'+'.join(dev_sets) or 'test'}")
    ax.legend(fontsize=7)
    return _save_png(fig, path)


BUDGET_METHODS = ("ctc-greedy-search", "1best")


def _run_minutes(budget: str, entries: list[dict]) -> float:
    """The budget in minutes; ``all`` is the run's ``labels["train_minutes"]`` if recorded, else inf."""
    recorded = [(e.get("labels") or {}).get("train_minutes") for e in entries]
    recorded = [float(m) for m in recorded if m is not None]
    return recorded[0] if budget == "all" and recorded else budget_minutes(budget)


def _budget_points(runs: dict[str, list[dict]], test_set: str) -> dict[str, dict[str, list]]:
    """method → feature type → [(minutes, rate, budget)], sorted; ``all`` at the run's
    ``labels["train_minutes"]``, else 4× right of the largest budget."""
    points: dict[str, dict[str, list]] = {}
    for name, entries in runs.items():
        entries = newest_checkpoint(entries)
        budget = run_budget(name, entries)
        minutes = _run_minutes(budget, entries)
        feature = ", ".join(sorted({e["feature_type"] for e in entries}))
        for e in entries:
            if e["test_set"] == test_set and e["decoding_method"] in BUDGET_METHODS:
                points.setdefault(e["decoding_method"], {}).setdefault(feature, []).append(
                    [minutes, e[metric_of(e)], budget])
    finite = [p[0] for f in points.values() for ps in f.values() for p in ps if math.isfinite(p[0])]
    for ps in (ps for f in points.values() for ps in f.values()):
        for p in ps:
            p[0] = p[0] if math.isfinite(p[0]) else 4 * max(finite, default=0.25)
        ps.sort()
    return points


def plot_budgets(runs: dict[str, list[dict]], test_set: str, path: str | os.PathLike) -> Path:
    """Error rate against label budget (minutes, log scale), one line per feature type, one subplot
    per method of :data:`BUDGET_METHODS` that some run decoded on ``test_set``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _budget_points(runs, test_set)
    methods = [m for m in BUDGET_METHODS if m in points]
    if not methods:
        raise ValueError(f"no {' or '.join(BUDGET_METHODS)} results for test set {test_set!r}")
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        ticks = {}
        for feature, ps in sorted(points[method].items()):
            ax.plot([p[0] for p in ps], [p[1] for p in ps], marker="o", label=feature)
            ticks.update({p[0]: p[2] for p in ps})
        metric = next(metric_of(e) for es in runs.values() for e in es if e["test_set"] == test_set)
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
        ax.minorticks_off()
        ax.set_xlabel("label budget (minutes of transcribed speech)")
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.set_title(f"{test_set}: {method}")
        ax.legend(fontsize=7)
    return _save_png(fig, path)


_LAYER = re.compile(r"^(?P<encoder>.+)_L(?P<layer>\d+)(?P<bf16>_bf16)?$")


def layer_points(runs: dict[str, list[dict]], test_set: str) -> dict[tuple[str, str], dict[int, float]]:
    """(encoder feature tag without the layer, label budget) → layer → error rate of 1best (else
    greedy search) on ``test_set``, for runs on one extracted layer (``<ckpt>_L<k>``); only
    encoders probed at two or more layers."""
    points: dict[tuple[str, str], dict[int, float]] = {}
    for name, entries in runs.items():
        rows = {e["decoding_method"]: e for e in entries if e["test_set"] == test_set}
        row = rows.get("1best") or rows.get("ctc-greedy-search")
        m = _LAYER.match(row["feature_type"]) if row else None
        if m:
            key = (m["encoder"] + (m["bf16"] or ""), run_budget(name, entries))
            points.setdefault(key, {})[int(m["layer"])] = row[metric_of(row)]
    return {k: dict(sorted(v.items())) for k, v in points.items() if len(v) > 1}


def plot_layers(runs: dict[str, list[dict]], test_set: str, path: str | os.PathLike) -> Path:
    """Error rate against the encoder layer used as features (SUPERB-style layer probe): which
    layer carries the phonetic information. One line per encoder and label budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = layer_points(runs, test_set)
    if not points:
        raise ValueError(f"no encoder probed at two or more layers on {test_set!r}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for (encoder, budget), by_layer in sorted(points.items()):
        ax.plot(list(by_layer), list(by_layer.values()), marker="o", label=f"{encoder} ({budget})")
    metric = next(metric_of(e) for es in runs.values() for e in es if e["test_set"] == test_set)
    ax.set_xlabel("layer (1-based Transformer block)")
    ax.set_ylabel(f"{metric.upper()} (%), 1best")
    ax.set_title(f"{test_set}: layer probe")
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
