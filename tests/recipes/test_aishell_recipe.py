"""The AISHELL recipe, stage 0 to 11, on the tiny synthetic corpus: characters, the joint
CTC/attention model and wenet's decoding methods beside the HLG, scored as CER in results.json."""

from __future__ import annotations

import json
import re

import pytest

from tests.recipes.helpers import recipe_copy, run_recipe

METHODS = ["ctc-greedy-search", "ctc-prefix-beam-search", "attention-rescoring", "1best", "attention-decoder"]


@pytest.mark.recipe
def test_aishell_recipe_end_to_end(tmp_path):
    from lhotse import SupervisionSet

    from w2v.data.text import mandarin_units

    recipe = recipe_copy(tmp_path, "aishell")
    proc = run_recipe(recipe, "--synth-size", "tiny", "--num-epochs", "2", "--avg", "1", "--keep-last-k", "1",
                      "--num-decoder-layers", "1", "--decoding-method", " ".join(METHODS),
                      "--lm-scales", "0.5,1.0", "--search-beam", "10", "--max-active-states", "1000")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    sups = SupervisionSet.from_file(recipe / "data/manifests/aishell_supervisions_test.jsonl.gz")
    ref_chars = sum(len(mandarin_units(s.text)) for s in sups)
    assert ref_chars > 0
    everything = json.loads((recipe / "exp/ctc_fbank/results.json").read_text())
    assert {r["test_set"] for r in everything} == {"test", "dev"}  # dev: for the LM scale
    results = [r for r in everything if r["test_set"] == "test"]
    assert {r["decoding_method"].split("/")[0] for r in results} == set(METHODS)
    # attention-decoder rescoring of the HLG n-best: one row per LM scale and attention scale
    assert {r["decoding_method"] for r in results if r["decoding_method"].startswith("attention-decoder")} == {
        f"attention-decoder/lm_scale_{l}_attention_scale_{a}" for l in (0.5, 1.0) for a in (0.3, 0.5, 1.0, 1.5)}
    assert {(r["labels"]["lm_scale"], r["labels"]["attention_scale"]) for r in results
            if r["decoding_method"].startswith("attention-decoder")} == {
        (l, a) for l in (0.5, 1.0) for a in (0.3, 0.5, 1.0, 1.5)}
    for r in results:
        assert "wer" not in r and r["checkpoint"] == "epoch-2-avg-1"
        assert r["labels"]["label_budget"] == "all" and r["labels"]["train_minutes"] > 0
        assert r["ref_words"] == ref_chars  # CER: characters of the normalised transcripts
        errors = r["ins"] + r["del"] + r["sub"]
        assert r["cer"] == pytest.approx(100.0 * errors / ref_chars, abs=0.01)
        method = r["decoding_method"].split("/")[0]
        key = r["decoding_method"].split("/")[-1]
        errs = (recipe / "exp/ctc_fbank" / method / f"errs-test-{key}-epoch-2-avg-1.txt").read_text()
        m = re.match(r"%CER (\d+\.\d+)% \[(\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]", errs)
        assert m and (int(m[2]), int(m[3])) == (errors, ref_chars), errs[:200]
    table = (recipe / "exp/ctc_fbank/RESULTS.md").read_text()
    assert all(m in table for m in METHODS) and "CER" in table
    # the model has the decoder it was asked for; the lang dir spells every character as a word
    import torch

    ckpt = torch.load(recipe / "exp/ctc_fbank/pretrained-epoch-2-avg-1.pt", weights_only=True)
    assert ckpt["config"]["num_decoder_layers"] == 1
    words = {line.split()[0] for line in (recipe / "data/lang_char/words.txt").read_text().splitlines()}
    units = {line.split()[0] for line in (recipe / "data/lang_char/tokens.txt").read_text().splitlines()}
    assert {u for u in units if not u.startswith(("<", "#"))} <= words
