"""The few-labels sweep on the tiny corpus, one command: label budgets × feature types, unlabelled
audio for pretraining, and a report whose cells are the runs' results with LM scales from dev."""

from __future__ import annotations

import json
import re

import pytest

from tests.recipes.helpers import recipe_copy, run_recipe
from w2v.scoring.bootstrap import compare_recogs
from w2v.scoring.results import recogs_path


@pytest.mark.recipe
def test_label_budget_sweep_with_unlabelled_audio(tmp_path):
    recipe = recipe_copy(tmp_path, "librispeech")
    proc = run_recipe(
        recipe, "--synth-size", "tiny", "--synth-unlabeled-minutes", "1", "--vocab-size", "100",
        "--ssl-models", "wav2vec2 data2vec", "--ssl-steps", "10", "--ssl-layer", "1",
        "--label-budgets", "1m all", "--feature-types", "fbank ssl", "--num-epochs", "2", "--avg", "1",
        "--decoding-method", "ctc-greedy-search whole-lattice-rescoring", "--lm-scales", "0.1,0.5,1.0",
        "--search-beam", "10", "--max-active-states", "1000")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # pretraining read the unlabelled part (audio only) beside the train part
    unlabeled = (recipe / "download/LibriSpeech/unlabeled")
    assert unlabeled.is_dir() and not list(unlabeled.rglob("*.trans.txt"))
    for model in ("wav2vec2", "data2vec"):  # each SSL model pretrained once
        record = json.loads((recipe / f"exp/.ssl_{model}.json").read_text())
        assert "data/manifests/unlabeled_cuts.jsonl.gz" in record["inputs"]
        assert len(re.findall(f"Stage 7: self-supervised pretraining of {model} ", proc.stdout)) == 1

    # six cells, each its own exp dir; the 1-minute subset trains the budget runs
    runs = {"ctc_fbank_1m": "1m", "ctc_fbank": "all", "ctc_ssl_wav2vec2_L1_1m": "1m", "ctc_ssl_wav2vec2_L1": "all",
            "ctc_ssl_data2vec_L1_1m": "1m", "ctc_ssl_data2vec_L1": "all"}
    minutes = {}
    for name, budget in runs.items():
        rows = json.loads((recipe / "exp" / name / "results.json").read_text())
        assert {r["test_set"] for r in rows} == {"test-clean", "dev-clean"}
        assert {r["labels"]["label_budget"] for r in rows} == {budget}
        minutes[name] = rows[0]["labels"]["train_minutes"]
    assert minutes["ctc_fbank_1m"] == pytest.approx(1.0, abs=0.01) == minutes["ctc_ssl_wav2vec2_L1_1m"]
    assert minutes["ctc_ssl_data2vec_L1_1m"] == minutes["ctc_fbank_1m"]  # the same subset for every cell
    assert minutes["ctc_fbank"] > 2

    # the report: one block per budget, fbank first, LM scale chosen on dev, cells = results.json
    report = (recipe / "exp/COMPARISON.md").read_text()
    assert report.index("### Label budget 1m") < report.index("### Label budget all")
    for budget, (base, other) in {"1m": ("ctc_fbank_1m", "ctc_ssl_wav2vec2_L1_1m"),
                                  "all": ("ctc_fbank", "ctc_ssl_wav2vec2_L1")}.items():
        # the objectives side by side in each block: fbank, data2vec, wav2vec2 (the runs' order)
        block = report.split(f"### Label budget {budget}")[1].split("### ")[0]
        header = next(line for line in block.splitlines() if line.startswith("| test set |"))
        cols = [c.strip() for c in header.split("|")[3:-1]]
        assert len(cols) == 3 and "fbank" in cols[0] and "data2vec" in cols[1] and "wav2vec2" in cols[2], header
        block = report.split(f"### Label budget {budget}")[1].split("### ")[0]
        rows = {n: {r["decoding_method"]: r for r in json.loads((recipe / "exp" / n / "results.json").read_text())
                    if r["test_set"] == "test-clean"} for n in (base, other)}
        dev = {n: {r["decoding_method"]: r for r in json.loads((recipe / "exp" / n / "results.json").read_text())
                   if r["test_set"] == "dev-clean"} for n in (base, other)}
        greedy = re.search(r"\| test-clean \| ctc-greedy-search \(WER\) \| ([\d.]+) \| ([\d.]+) \(Δ ([+-][\d.]+)\*?, "
                           r"95% CI \[([+-][\d.]+), ([+-][\d.]+)\]\) \|", block)
        assert greedy, block
        assert float(greedy[1]) == rows[base]["ctc-greedy-search"]["wer"]
        assert float(greedy[2]) == rows[other]["ctc-greedy-search"]["wer"]
        boot = compare_recogs(recogs_path(recipe / "exp" / base, rows[base]["ctc-greedy-search"]),
                              recogs_path(recipe / "exp" / other, rows[other]["ctc-greedy-search"]))
        assert float(greedy[3]) == pytest.approx(boot["diff"], abs=0.006)
        assert (float(greedy[4]), float(greedy[5])) == pytest.approx((boot["lo"], boot["hi"]), abs=0.006)
        # whole-lattice: the scale with the fewest dev errors, its test WER
        cell = re.search(r"\| test-clean \| whole-lattice-rescoring \(WER\) \| ([\d.]+) \(lm_scale ([\d.]+) on dev-clean\)",
                         block)
        assert cell, block
        scales = {k: v for k, v in dev[base].items() if k.startswith("whole-lattice-rescoring/")}
        chosen = min(scales, key=lambda k: (scales[k]["ins"] + scales[k]["del"] + scales[k]["sub"], k))
        assert chosen == f"whole-lattice-rescoring/lm_scale_{cell[2]}"
        assert float(cell[1]) == rows[base][chosen]["wer"]
    assert (recipe / "exp/COMPARISON-budgets-test-clean.png").is_file()
