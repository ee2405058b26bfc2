"""The whole LibriSpeech recipe, stage 0 to 11, on the tiny synthetic corpus (CI runs it once);
what its stage records do with a rerun, a truncated checkpoint, another checkpoint to decode and
another corpus; then the feature swap: stages 7-11 again on a pretrained encoder's layer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.recipes.helpers import recipe_copy as _recipe_copy, run_recipe as _run

METHODS = ["ctc-greedy-search", "ctc-decoding", "1best", "whole-lattice-rescoring"]


def _test_rows(results: list[dict]) -> list[dict]:
    return [r for r in results if r["test_set"] == "test-clean"]


@pytest.mark.recipe
def test_librispeech_recipe_end_to_end(tmp_path, monkeypatch):
    recipe = _recipe_copy(tmp_path, "librispeech")
    args = ["--synth-size", "tiny", "--vocab-size", "100", "--num-epochs", "3", "--avg", "2",
            "--keep-last-k", "2", "--max-duration", "30", "--decoding-method", " ".join(METHODS),
            "--lm-scales", "0.5,1.0", "--search-beam", "10", "--max-active-states", "1000"]
    proc = _run(recipe, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # every stage produced its artefact
    for rel in ["data/manifests/librispeech_supervisions_test-clean.jsonl.gz",
                "data/fbank/librispeech_cuts_train-clean-100.jsonl.gz",
                "data/lang_bpe_100/bpe.model", "data/lang_bpe_100/L_disambig.pt",
                "data/lm/G_3_gram.fst.txt", "data/lang_bpe_100/HLG.pt", "data/lm/G_4_gram.pt",
                "exp/ctc_fbank/epoch-3.pt", "exp/ctc_fbank/RESULTS.md"]:
        assert (recipe / rel).is_file(), rel

    # training did train: three epochs of optimizer steps, the loss falling; the last two are kept
    epochs = [torch.load(recipe / f"exp/ctc_fbank/epoch-{e}.pt", weights_only=True) for e in (2, 3)]
    assert epochs[0]["scheduler"]["last_epoch"] >= 6
    assert 2 * epochs[1]["scheduler"]["last_epoch"] == 3 * epochs[0]["scheduler"]["last_epoch"]
    assert 0 < epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert sorted(p.name for p in (recipe / "exp/ctc_fbank").glob("epoch-*.pt")) == ["epoch-2.pt", "epoch-3.pt"]
    exported = torch.load(recipe / "exp/ctc_fbank/pretrained-epoch-3-avg-2.pt", weights_only=True)
    assert exported["averaged_from"] == ["epoch-2.pt", "epoch-3.pt"] and "optimizer" not in exported

    # results.json: one entry per method (and LM scale), consistent with the test transcripts
    ref_words = sum(
        len(line.split()) - 1
        for t in (recipe / "download/LibriSpeech/test-clean").rglob("*.trans.txt")
        for line in t.read_text().splitlines()
    )
    everything = json.loads((recipe / "exp/ctc_fbank/results.json").read_text())
    # dev is decoded too (the report chooses LM scales on it); the test rows:
    results = _test_rows(everything)
    assert {r["test_set"] for r in everything} == {"test-clean", "dev-clean"}
    methods = {r["decoding_method"].split("/")[0] for r in results}
    assert methods == set(METHODS)
    assert {r["decoding_method"] for r in results if r["decoding_method"].startswith("whole")} == {
        "whole-lattice-rescoring/lm_scale_0.5", "whole-lattice-rescoring/lm_scale_1.0"}
    for r in results:
        assert r["test_set"] == "test-clean" and r["feature_type"] == "fbank"
        assert r["ref_words"] == ref_words
        errors = r["ins"] + r["del"] + r["sub"]
        assert r["wer"] == pytest.approx(100.0 * errors / ref_words, abs=0.01)
        # the errs file of this entry carries the same numbers in icefall's header format
        key = r["decoding_method"].split("/")[-1] if "/" in r["decoding_method"] else r["decoding_method"]
        method = r["decoding_method"].split("/")[0]
        assert r["checkpoint"] == "epoch-3-avg-2"
        errs = (recipe / "exp/ctc_fbank" / method / f"errs-test-clean-{key}-epoch-3-avg-2.txt").read_text()
        m = re.match(r"%WER (\d+\.\d+)% \[(\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]", errs)
        assert m, errs[:200]
        assert (int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6])) == (
            errors, ref_words, r["ins"], r["del"], r["sub"])
    table = (recipe / "exp/ctc_fbank/RESULTS.md").read_text()
    assert all(m in table for m in METHODS)
    assert "RESULTS.md" in proc.stdout or "| " in proc.stdout  # stage 11 printed the table

    # a rerun skips every finished stage and leaves results unchanged
    before = (recipe / "exp/ctc_fbank/epoch-3.pt").stat().st_mtime_ns
    proc = _run(recipe, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("manifests train-clean-100", "fbank test-clean", "BPE", "lang", "n-gram LMs", "HLG",
                 "average epoch 3 avg 2", "decode epoch 3 avg 2"):
        assert f"  {name}: up to date (built from the same inputs and options), skipping" in proc.stdout, name
    assert "exp/ctc_fbank already holds epoch-3.pt: nothing to train for --num-epochs 3" in proc.stderr
    assert (recipe / "exp/ctc_fbank/epoch-3.pt").stat().st_mtime_ns == before
    assert json.loads((recipe / "exp/ctc_fbank/results.json").read_text()) == everything

    # a truncated newest checkpoint: training redoes that epoch from the one before, and the
    # averaged model and its decoding follow because their input changed
    newest = recipe / "exp/ctc_fbank/epoch-3.pt"
    newest.write_bytes(newest.read_bytes()[:100_000])
    proc = _run(recipe, *args, "--stage", "9")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "skipping exp/ctc_fbank/epoch-3.pt: it does not load (exp/ctc_fbank/epoch-3.pt: truncated or corrupt" in proc.stderr
    assert "resuming after exp/ctc_fbank/epoch-2.pt" in proc.stderr
    assert torch.load(newest, weights_only=True)["epoch"] == 3
    assert "  average epoch 3 avg 2: rebuild: input exp/ctc_fbank/epoch-3.pt changed" in proc.stdout
    assert "  decode epoch 3 avg 2: rebuild: input exp/ctc_fbank/pretrained-epoch-3-avg-2.pt changed" in proc.stdout

    # another checkpoint decodes beside the first: results and files keyed by epoch and avg
    proc = _run(recipe, *args, "--stage", "10", "--epoch", "2", "--avg", "1", "--decoding-method", "ctc-greedy-search")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    greedy = {r["checkpoint"] for r in json.loads((recipe / "exp/ctc_fbank/results.json").read_text())
              if r["decoding_method"] == "ctc-greedy-search"}
    assert greedy == {"epoch-3-avg-2", "epoch-2-avg-1"}
    assert (recipe / "exp/ctc_fbank/ctc-greedy-search/errs-test-clean-ctc-greedy-search-epoch-2-avg-1.txt").is_file()
    results = [r for r in _test_rows(json.loads((recipe / "exp/ctc_fbank/results.json").read_text()))
               if r["checkpoint"] == "epoch-3-avg-2"]
    assert {r["decoding_method"].split("/")[0] for r in results} == set(METHODS)

    # the default schedule (--num-epochs auto): past the all-blank stretch (not while greedy search
    # on dev says less than half the reference's tokens), then until the dev loss stalls for 50
    # updates (10 epochs of the tiny corpus's 5; the default 250 would take 50 epochs of CI time)
    proc = _run(recipe, *args, "--stage", "9", "--stop-stage", "10", "--num-epochs", "auto", "--avg", "3",
                "--patience-updates", "50",
                "--keep-last-k", "3", "--exp-dir", "auto/ctc_fbank", "--decoding-method", "ctc-greedy-search 1best")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stop = re.search(r"stopping after epoch (\d+): no better dev loss since epoch (\d+)", proc.stderr)
    assert stop and int(stop[1]) - int(stop[2]) >= 10, proc.stderr[-2000:]
    last = torch.load(recipe / f"auto/ctc_fbank/epoch-{stop[1]}.pt", weights_only=True)
    assert last["plateau"]["output_ratio"] >= 0.5 and last["warmup"] < 300
    assert f"Stage 10: decode test-clean (and dev-clean) with epoch {stop[1]} avg 3" in proc.stdout
    auto = {r["decoding_method"]: r for r in _test_rows(json.loads((recipe / "auto/ctc_fbank/results.json").read_text()))}
    for r in auto.values():
        assert r["ref_words"] - r["del"] - r["sub"] > 0, r  # some words right
    greedy = auto["ctc-greedy-search"]
    assert greedy["del"] < 0.8 * greedy["ref_words"], greedy  # not (nearly) empty output
    hyps = (recipe / f"auto/ctc_fbank/ctc-greedy-search/recogs-test-clean-ctc-greedy-search-epoch-{stop[1]}-avg-3.txt")
    assert "hyp=[]" not in hyps.read_text()

    # the feature swap: pretrain a small HuBERT (log-mel input), then train and decode on its layer 2
    # (the sweep test pretrains tiny wav2vec2 and data2vec)
    proc = _run(recipe, *args, "--stage", "7", "--ssl-model", "hubert", "--ssl-size", "small", "--ssl-steps", "20",
                "--feature-type", "ssl", "--ssl-layer", "2", "--num-epochs", "2", "--avg", "1",
                "--decoding-method", "ctc-greedy-search 1best")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tag = "ssl_hubert_L2"
    spec = json.loads((recipe / f"data/ssl/{tag}/ssl_features.json").read_text())
    assert spec["checkpoint"].endswith("exp/ssl_hubert/checkpoint-20.pt")
    assert (spec["layer"], spec["feature_dim"], spec["frame_shift"], spec["bf16"]) == (2, 128, 0.02, False)
    assert json.loads((recipe / "exp/.ssl_hubert.json").read_text())["options"]["size"] == "small"
    from lhotse import CutSet

    monkeypatch.chdir(recipe)  # manifests hold paths relative to the recipe dir, as in icefall
    for part in ("train-clean-100", "dev-clean", "test-clean"):
        fbank = CutSet.from_file(recipe / f"data/fbank/librispeech_cuts_{part}.jsonl.gz")
        ssl = CutSet.from_file(recipe / f"data/ssl/{tag}/librispeech_cuts_{part}.jsonl.gz")
        assert sorted(ssl.ids) == sorted(fbank.ids)
        cut = next(iter(ssl))
        assert cut.load_features().shape == (cut.num_frames, 128) and cut.frame_shift == 0.02
    ckpt = torch.load(recipe / f"exp/ctc_{tag}/epoch-2.pt", weights_only=False)
    assert ckpt["scheduler"]["last_epoch"] > 0
    assert (ckpt["config"]["feature_dim"], ckpt["config"]["subsampling"]) == (128, 2)
    ssl_results = _test_rows(json.loads((recipe / f"exp/ctc_{tag}/results.json").read_text()))
    assert {r["decoding_method"] for r in ssl_results} == {"ctc-greedy-search", "1best/lm_scale_0.5", "1best/lm_scale_1.0"}
    for r in ssl_results:
        assert r["feature_type"] == tag and r["ref_words"] == ref_words
        assert r["wer"] == pytest.approx(100.0 * (r["ins"] + r["del"] + r["sub"]) / ref_words, abs=0.01)
    # stage 11 sets the SSL run against fbank, 1best at the LM scale each run did best with on dev
    from w2v.scoring.results import choose_on_dev

    comparison = (recipe / "exp/COMPARISON.md").read_text()
    assert "| ctc_fbank | ctc_ssl_hubert_L2 |" in comparison
    (fb,), (ss,) = ([r for r in choose_on_dev([e for e in json.loads((recipe / f"exp/{d}/results.json").read_text())
                                               if e["checkpoint"] == c], ["dev-clean"])
                     if r["decoding_method"].startswith("1best/")]
                    for d, c in (("ctc_fbank", "epoch-3-avg-2"), (f"ctc_{tag}", "epoch-2-avg-1")))
    fb_scale, ss_scale = (r["decoding_method"].removeprefix("1best/lm_scale_") for r in (fb, ss))
    cell = re.search(rf"\| test-clean \| 1best \(WER\) \| {fb['wer']:.2f} \(lm_scale {fb_scale} on dev-clean\) \| "
                     rf"{ss['wer']:.2f} \(lm_scale {ss_scale} on dev-clean; Δ ([+-]\d+\.\d\d)\*?, "
                     rf"95% CI \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\]\) \|", comparison)
    assert cell, comparison
    assert float(cell[1]) == pytest.approx(ss["wer"] - fb["wer"], abs=0.011)
    assert float(cell[2]) <= float(cell[1]) <= float(cell[3])
    assert (recipe / "exp/COMPARISON-test-clean.png").is_file()

    # on the fly: a learned weighted sum of the frozen encoder's layers, and a fine-tuned encoder
    # (in 2 DDP processes: blocks 3-4 and the mask embedding get no gradient)
    encoder = torch.load(recipe / "exp/ssl_hubert/checkpoint-20.pt", weights_only=False)["model"]
    for ftype, tag in (("ssl-weighted", "ssl_hubert_weighted"), ("ssl-finetune", "ssl_hubert_finetune_L2")):
        proc = _run(recipe, *args, "--stage", "8", "--ssl-model", "hubert", "--feature-type", ftype,
                    "--num-epochs", "1", "--avg", "1", "--decoding-method", "ctc-greedy-search",
                    "--world-size", "2" if ftype == "ssl-finetune" else "1")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        ckpt = torch.load(recipe / f"exp/ctc_{tag}/epoch-1.pt", weights_only=False)
        assert ckpt["scheduler"]["last_epoch"] > 0 and ckpt["train_loss"] > 0
        spec = ckpt["config"]["ssl"]
        assert (spec["layer"], spec["finetune"]) == ((0, False) if ftype == "ssl-weighted" else (2, True))
        state = {k[len("frontend.encoder."):]: v for k, v in ckpt["model"].items()
                 if k.startswith("frontend.encoder.")}
        if ftype == "ssl-weighted":
            assert not state and ckpt["model"]["frontend.layer_weights"].shape == (4,)
        else:  # blocks 1-2 moved, blocks 3-4 (above the layer used) did not; log-mels have no weights
            assert state.keys() == encoder.keys() and not any(k.startswith("feature_extractor.") for k in state)
            moved = {k.split(".")[3] for k in state if k.startswith("encoder.transformer.layers.")
                     and not torch.equal(state[k], encoder[k])}
            assert moved == {"0", "1"}
        (r,) = _test_rows(json.loads((recipe / f"exp/ctc_{tag}/results.json").read_text()))
        assert r["feature_type"] == tag and r["ref_words"] == ref_words
    assert ("| ctc_fbank | ctc_ssl_hubert_L2 | ctc_ssl_hubert_finetune_L2 | ctc_ssl_hubert_weighted |"
            in (recipe / "exp/COMPARISON.md").read_text())

    # another corpus through --corpus-dir, in the same recipe dir: every stage it feeds says why it
    # rebuilds, the old model is kept aside, and the WER is the new corpus's
    from w2v.data.synth import make_corpus, make_spec

    other = make_corpus(tmp_path / "other", make_spec("librispeech", "tiny", seed=1), progress=False)
    proc = _run(recipe, *args, "--corpus-dir", str(other), "--num-epochs", "1", "--avg", "1",
                "--decoding-method", "ctc-greedy-search", "--stop-stage", "10")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert (f"  manifests test-clean: rebuild: new input {other}/test-clean; "
            f"input download/LibriSpeech/test-clean no longer used") in out
    assert ("  fbank test-clean: rebuild: input data/manifests/librispeech_recordings_test-clean.jsonl.gz "
            "changed") in out
    assert "  BPE: rebuild: input data/manifests/librispeech_supervisions_train-clean-100.jsonl.gz changed" in out
    assert "  HLG: rebuild: input data/lang_bpe_100/L_disambig.pt changed" in out
    (kept,) = (recipe / "exp/replaced").iterdir()
    assert f"kept the old outputs: exp/ctc_fbank -> exp/replaced/{kept.name}" in out
    assert (kept / "epoch-3.pt").is_file() and (kept / "results.json").is_file()
    (row,) = _test_rows(json.loads((recipe / "exp/ctc_fbank/results.json").read_text()))
    assert row["ref_words"] == _ref_words(other, "test-clean") != ref_words


def test_run_sh_rejects_unknown_option(tmp_path):
    recipe = _recipe_copy(tmp_path, "librispeech")
    proc = _run(recipe, "--stop-stag", "3")
    assert proc.returncode != 0
    assert "unknown option --stop-stag" in proc.stderr
    proc = _run(recipe, "--help")
    assert proc.returncode == 0 and "Stage" not in proc.stderr and "--decoding-method" in proc.stdout


def test_run_sh_missing_corpus_dir(tmp_path):
    recipe = _recipe_copy(tmp_path, "librispeech")
    proc = _run(recipe, "--corpus-dir", str(tmp_path / "nowhere"), "--stop-stage", "1")
    assert proc.returncode != 0
    assert f"--corpus-dir {tmp_path / 'nowhere'} does not exist" in proc.stdout + proc.stderr


def _ref_words(corpus: Path, part: str) -> int:
    return sum(len(line.split()) - 1 for t in (corpus / part).rglob("*.trans.txt")
               for line in t.read_text().splitlines())
