"""The comparison of several exp dirs: lm scale chosen on dev, one block per label budget, every
cell against the fbank run of its budget with a paired bootstrap interval."""

import pytest

from w2v.scoring.bootstrap import compare_recogs, excludes_zero
from w2v.scoring.report import report_decoding
from w2v.scoring.results import (budget_minutes, choose_on_dev, comparison_markdown, label_budget,
                                 load_results, newest_checkpoint, plot_budgets, recogs_path, run_budget)

WORDS = "THE CAT SAT ON A MAT AND DID NOT MOVE".split()
N = 40  # utterances per set, 5 words each
WLR = "whole-lattice-rescoring"


def _entry(test_set, method, errors, feature="fbank", **extra):
    return {"test_set": test_set, "decoding_method": method, "feature_type": feature,
            "checkpoint": "epoch-2-avg-1", "wer": errors, "ins": 0, "del": 0, "sub": errors,
            "ref_words": 100, **extra}


def test_choose_on_dev_takes_the_dev_best_scale_not_the_test_best():
    entries = [_entry("dev-clean", f"{WLR}/lm_scale_0.3", 5), _entry("dev-clean", f"{WLR}/lm_scale_0.5", 3),
               _entry("test-clean", f"{WLR}/lm_scale_0.3", 2), _entry("test-clean", f"{WLR}/lm_scale_0.5", 6),
               _entry("test-other", f"{WLR}/lm_scale_0.3", 1), _entry("test-other", f"{WLR}/lm_scale_0.5", 9),
               _entry("test-clean", "1best", 7), _entry("dev-clean", "1best", 8)]
    chosen = choose_on_dev(entries, ["dev-clean"])
    assert [(e["test_set"], e["decoding_method"], e["wer"]) for e in chosen] == [
        ("test-clean", "1best", 7), ("test-clean", f"{WLR}/lm_scale_0.5", 6),
        ("test-other", f"{WLR}/lm_scale_0.5", 9)]
    assert [e.get("labels", {}).get("lm_scale_from") for e in chosen] == [None, "dev-clean", "dev-clean"]
    assert "labels" not in entries[3]  # the run's entries are left as they were

    # two dev sets: the fewest errors summed over both (0.3: 5 + 1, 0.5: 3 + 10)
    both = entries + [_entry("dev-other", f"{WLR}/lm_scale_0.3", 1), _entry("dev-other", f"{WLR}/lm_scale_0.5", 10)]
    chosen = choose_on_dev(both, ["dev-clean", "dev-other"])
    assert [(e["decoding_method"], e["labels"]["lm_scale_from"]) for e in chosen if e["test_set"] == "test-clean"
            and "/" in e["decoding_method"]] == [(f"{WLR}/lm_scale_0.3", "dev-clean+dev-other")]


def test_choose_on_dev_without_dev_results_falls_back_to_test_and_says_so():
    entries = [_entry("test-clean", f"{WLR}/lm_scale_0.3", 2), _entry("test-clean", f"{WLR}/lm_scale_0.5", 6)]
    for dev_sets in ((), ("dev-clean",)):
        (e,) = choose_on_dev(entries, dev_sets)
        assert e["decoding_method"].endswith("0.3") and e["labels"]["lm_scale_from"] == "test"
    text = comparison_markdown({"ctc_fbank": entries}, dev_sets=["dev-clean"])
    assert "| test-clean | whole-lattice-rescoring (WER) | 2.00 (lm_scale 0.3 chosen on test) |" in text


def test_label_budgets():
    assert label_budget({"label_budget": "10m", "labels": {"label_budget": "1h"}}) == "10m"
    assert label_budget({"labels": {"label_budget": "1h"}}) == "1h"
    assert label_budget({}) == "all"
    assert [budget_minutes(b) for b in ("10m", "1h", "1.5h", "2.5", "all")] == [10, 60, 90, 2.5, float("inf")]
    for bad in ("ten", "30s"):  # what stage 9 cannot train on, the report does not read either
        with pytest.raises(ValueError, match=f"Bad label budget '{bad}'"):
            budget_minutes(bad)
    with pytest.raises(ValueError, match=r"run r mixes label budgets \['10m', 'all'\]"):
        run_budget("r", [_entry("t", "1best", 1, label_budget="10m"), _entry("t", "1best", 1)])


def _refs(prefix):
    return [(f"{prefix}-{i:02d}", [WORDS[(i + j) % len(WORDS)] for j in range(5)]) for i in range(N)]


def _decode(exp_dir, test_set, errors: dict, feature, labels):
    """Writes what decoding leaves: per (method, key) the hyps with errors[i] words wrong in utterance i."""
    hyps = {}
    for (method, key), errs in errors.items():
        hyps.setdefault(method, {})[key] = [(c, ref, ["X"] * k + ref[k:])
                                            for (c, ref), k in zip(_refs(test_set), errs)]
    report_decoding(exp_dir, test_set, hyps, feature, labels={"epoch": 2, "avg": 1, **labels}, plot=False)


def _constant(k):
    return [k] * N


def _make_runs(root):
    """10m: fbank, and ssl that is much better with greedy search, hardly different with 1best, and
    whose dev-best scale (0.5) is not its test-best (0.3). all: ssl (listed first), fbank (no dev results)."""
    one_more = [3] + [2] * (N - 1)
    runs = {
        "ctc_fbank_10m": ("fbank", {"label_budget": "10m"}, {
            "test-clean": {("ctc-greedy-search", "ctc-greedy-search"): _constant(2), ("1best", "1best"): _constant(2),
                           (WLR, "lm_scale_0.3"): _constant(1), (WLR, "lm_scale_0.5"): _constant(2)},
            "dev-clean": {(WLR, "lm_scale_0.3"): _constant(1), (WLR, "lm_scale_0.5"): _constant(2)}}),
        "ctc_ssl_10m": ("ssl", {"label_budget": "10m"}, {
            "test-clean": {("ctc-greedy-search", "ctc-greedy-search"): _constant(0), ("1best", "1best"): one_more,
                           (WLR, "lm_scale_0.3"): _constant(0), (WLR, "lm_scale_0.5"): _constant(1)},
            "dev-clean": {(WLR, "lm_scale_0.3"): _constant(2), (WLR, "lm_scale_0.5"): _constant(0)}}),
        "ctc_ssl": ("ssl", {}, {
            "test-clean": {("ctc-greedy-search", "ctc-greedy-search"): _constant(1),
                           ("1best", "1best"): _constant(1)}}),
        "ctc_fbank": ("fbank", {"train_minutes": 600}, {
            "test-clean": {("ctc-greedy-search", "ctc-greedy-search"): _constant(1), ("1best", "1best"): _constant(1),
                           (WLR, "lm_scale_0.3"): _constant(1), (WLR, "lm_scale_0.5"): _constant(0)}}),
    }
    for name, (feature, labels, per_set) in runs.items():
        for test_set, errors in per_set.items():
            _decode(root / name, test_set, errors, feature, labels)
    return {name: load_results(root / name / "results.json") for name in runs}, {n: root / n for n in runs}


def _block(text, budget):
    lines = text.splitlines()
    start = lines.index(f"### Label budget {budget}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")), len(lines))
    block = lines[start:end]
    while not block[-1]:
        block.pop()
    return block


def _cells(block):
    return {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in block if line.startswith("| test-")}


def _expected_cell(runs, exp_dirs, base, name, method, dev_sets=("dev-clean",)):
    """The cell computed directly: rate, chosen scale, Δ, interval and star from the recogs files."""
    pick = {n: {e["decoding_method"].split("/")[0]: e for e in choose_on_dev(newest_checkpoint(runs[n]), dev_sets)}
            for n in (base, name)}
    a, b = pick[base][method], pick[name][method]
    r = compare_recogs(recogs_path(exp_dirs[base], a), recogs_path(exp_dirs[name], b))
    scale = ""
    if "/" in b["decoding_method"]:
        scale = f"lm_scale {b['decoding_method'].split('_')[-1]} on dev-clean; "
    star = "*" if excludes_zero(r) else ""
    return f"{b['wer']:.2f} ({scale}Δ {r['diff']:+.2f}{star}, 95% CI [{r['lo']:+.2f}, {r['hi']:+.2f}])", r


def test_one_block_per_budget_against_fbank_of_that_budget(tmp_path):
    runs, exp_dirs = _make_runs(tmp_path)
    text = comparison_markdown(runs, dev_sets=["dev-clean"], exp_dirs=exp_dirs)
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("### ")] == ["### Label budget 10m", "### Label budget all"]
    assert "dev-clean" not in {line.split("|")[1].strip() for line in lines if line.startswith("| ")}

    small = _block(text, "10m")
    assert small[2] == "| test set | decoding method | ctc_fbank_10m (fbank) | ctc_ssl_10m (ssl) |"
    cells = _cells(small)
    stars = []
    for method in ("ctc-greedy-search", "1best", WLR):
        expected, r = _expected_cell(runs, exp_dirs, "ctc_fbank_10m", "ctc_ssl_10m", method)
        assert cells[("test-clean", f"{method} (WER)")][1] == expected
        stars.append((expected.split(",")[0].endswith("*"), r["lo"] > 0 or r["hi"] < 0))
    # the star marks exactly the intervals without 0: greedy search only
    assert stars == [(True, True), (False, False), (False, False)]
    assert cells[("test-clean", "ctc-greedy-search (WER)")] == [
        "40.00", "0.00 (Δ -40.00*, 95% CI [-40.00, -40.00])"]
    # 1best: one more error in one of 40 utterances; resamples without it give 0
    assert cells[("test-clean", "1best (WER)")][1].startswith("40.50 (Δ +0.50, 95% CI [+0.00, ")
    # ssl's dev set chose 0.5 (20%), though 0.3 scores 0% on test
    assert cells[("test-clean", f"{WLR} (WER)")] == [
        "20.00 (lm_scale 0.3 on dev-clean)", "20.00 (lm_scale 0.5 on dev-clean; Δ +0.00, 95% CI [+0.00, +0.00])"]
    assert small[-1] == "Checkpoints: ctc_fbank_10m epoch-2-avg-1, ctc_ssl_10m epoch-2-avg-1"

    full = _block(text, "all")
    assert full[2] == "| test set | decoding method | ctc_fbank | ctc_ssl |"  # fbank first, named once
    assert _cells(full) == {
        ("test-clean", "ctc-greedy-search (WER)"): ["20.00", "20.00 (Δ +0.00, 95% CI [+0.00, +0.00])"],
        ("test-clean", "1best (WER)"): ["20.00", "20.00 (Δ +0.00, 95% CI [+0.00, +0.00])"],
        ("test-clean", f"{WLR} (WER)"): ["0.00 (lm_scale 0.5 chosen on test)", "-"],
    }


def test_runs_on_different_cuts_are_refused(tmp_path):
    runs, exp_dirs = _make_runs(tmp_path)
    path = recogs_path(exp_dirs["ctc_ssl_10m"], next(e for e in runs["ctc_ssl_10m"] if e["decoding_method"] == "1best"))
    path.write_text("".join(path.read_text().splitlines(keepends=True)[2:]))  # drop the first cut
    with pytest.raises(ValueError, match=r"ctc_fbank_10m/1best/recogs-test-clean-1best-epoch-2-avg-1\.txt and "
                                         r".*ctc_ssl_10m/1best/.*different cuts.*test-clean-00"):
        comparison_markdown(runs, dev_sets=["dev-clean"], exp_dirs=exp_dirs)


def test_budget_plot_and_the_entry_point(tmp_path):
    from w2v.bin.compare_results import main as compare_main
    from w2v.scoring.results import _budget_points

    runs, exp_dirs = _make_runs(tmp_path)
    points = _budget_points(runs, "test-clean")
    assert points["1best"] == {"fbank": [[10.0, 40.0, "10m"], [600.0, 20.0, "all"]],
                               "ssl": [[10.0, 40.5, "10m"], [2400.0, 20.0, "all"]]}  # no train_minutes: 4× right
    path = plot_budgets(runs, "test-clean", tmp_path / "budgets.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no ctc-greedy-search or 1best"):
        plot_budgets(runs, "dev-clean", tmp_path / "none.png")

    out = tmp_path / "COMPARISON.md"
    compare_main([str(exp_dirs[n]) for n in runs] + ["--dev-sets", "dev-clean", "--out", str(out)])
    assert out.read_text() == comparison_markdown(runs, dev_sets=["dev-clean"], exp_dirs=exp_dirs)
    assert (tmp_path / "COMPARISON-budgets-test-clean.png").stat().st_size > 1000
    assert (tmp_path / "COMPARISON-test-clean.png").stat().st_size > 1000
    assert not (tmp_path / "COMPARISON-dev-clean.png").exists()
    assert not (tmp_path / "COMPARISON-budgets-dev-clean.png").exists()


def test_layer_probe_points_and_plot(tmp_path):
    """Runs on single extracted layers of one encoder: error rate by layer, per label budget."""
    from w2v.scoring.results import layer_points, plot_layers

    def run(tag, budget, wer):
        return [{"test_set": "test", "decoding_method": "1best", "feature_type": tag, "checkpoint": "epoch-1-avg-1",
                 "wer": wer, "ins": 0, "del": 0, "sub": 0, "ref_words": 10,
                 "labels": {"label_budget": budget}}]

    runs = {"ctc_ssl_hubert_L1_10m": run("ssl_hubert_L1", "10m", 40.0),
            "ctc_ssl_hubert_L3_10m": run("ssl_hubert_L3", "10m", 20.0),
            "ctc_ssl_hubert_L2_10m": run("ssl_hubert_L2", "10m", 30.0),
            "ctc_ssl_hubert_L2": run("ssl_hubert_L2", "all", 10.0),  # one layer only: no line
            "ctc_fbank_10m": run("fbank", "10m", 50.0)}
    assert layer_points(runs, "test") == {("ssl_hubert", "10m"): {1: 40.0, 2: 30.0, 3: 20.0}}
    assert list(layer_points(runs, "test")[("ssl_hubert", "10m")]) == [1, 2, 3]
    assert plot_layers(runs, "test", tmp_path / "layers.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no encoder probed"):
        plot_layers({"ctc_fbank": run("fbank", "all", 5.0)}, "test", tmp_path / "x.png")
