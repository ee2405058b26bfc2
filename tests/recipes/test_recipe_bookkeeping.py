"""What run.sh tells a user who gets something wrong, and what survives: options checked before
stage 0, a stage's missing inputs, a corpus in the wrong layout, a second run building the same
thing, a killed stage, audio added to a part, other AISHELL train parts. (The trained-model cases,
a truncated checkpoint and another corpus after a full run, are in test_librispeech_recipe.py.)"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.recipes.helpers import REPO, recipe_copy as _recipe_copy, run_recipe as _run

TINY = ["--synth-size", "tiny", "--vocab-size", "100"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A LibriSpeech recipe dir after stages 0-2 on the tiny corpus."""
    recipe = _recipe_copy(tmp_path_factory.mktemp("built"), "librispeech")
    proc = _run(recipe, *TINY, "--stop-stage", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return recipe


@pytest.fixture
def recipe(built, tmp_path) -> Path:
    """A private copy of ``built`` (manifests hold paths relative to the recipe dir)."""
    d = tmp_path / "egs" / "librispeech"
    shutil.copytree(built, d, symlinks=True)
    return d


@pytest.mark.parametrize("args, message", [
    (["-stage", "5", "--stop-stage", "6"], "options take two dashes: -stage -> --stage"),
    (["--HOME", "/x"], "unknown option --HOME"),
    (["--stage", "1", "extra"], "unexpected argument 'extra'"),
    (["--feature-type", "foo"], "--feature-type: 'foo' is not one of: fbank ssl ssl-weighted ssl-finetune"),
    (["--num-epochs", "2"], "--avg 3 needs 3 epochs up to --epoch 2: give --avg ≤ 2"),
    (["--num-epochs", "ten"], "--num-epochs must be a whole number > 0, got 'ten'"),
    (["--avg", "6"], "--keep-last-k 5 keeps fewer epochs than --avg 6 averages"),  # --num-epochs auto
    (["--patience", "0"], "--patience must be a whole number > 0, got '0'"),
    (["--label-budget", "10min"], "--label-budget(s): '10min' is not a budget: 10m, 1h, 10h"),
    (["--label-budgets", "10m 0h"], "--label-budget(s): '0h' is not a budget"),
    (["--feature-types", "fbank mfcc"], "--feature-types: 'mfcc' is not one of: fbank ssl ssl-weighted ssl-finetune"),
    (["--synth-unlabeled-minutes", "-1"], "--synth-unlabeled-minutes must be a number ≥ 0, got '-1'"),
    (["--decoding-method", "1best bestpath"], "--decoding-method: 'bestpath' is not one of: ctc-greedy-search"),
    (["--ssl-size", "huge"], "--ssl-size: 'huge' is not one of: tiny small base large"),
    (["--ssl-lr-scale", "x"], "--ssl-lr-scale must be a number > 0, got 'x'"),
    (["--speed-perturb", "yes"], "--speed-perturb must be true or false, got 'yes'"),
    (["--max-duration", "0"], "--max-duration must be a number > 0, got '0'"),
    (["--lm-scales", "0.5;1"], "--lm-scales must be numbers separated by commas, got '0.5;1'"),
    (["--lm-arpa", "/no/such.arpa"], "--lm-arpa /no/such.arpa: no such file"),
    (["--num-epochs", "10", "--keep-last-k", "2", "--epoch", "8"],
     "--keep-last-k 2 keeps epochs 9..10, but --epoch 8 --avg 3 needs epochs 6..8"),
    (["--train-parts", "train-clean-1000"], "unknown librispeech part(s) ['train-clean-1000']"),
    (["--stage", "7", "--stop-stage", "3"], "--stage 7 is after --stop-stage 3: nothing to run"),
])
def test_bad_options_are_refused_before_stage_0(tmp_path, args, message):
    recipe = _recipe_copy(tmp_path, "librispeech")
    proc = _run(recipe, *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert not (recipe / "download").exists() and not (recipe / "data").exists()  # nothing ran


def test_a_stage_names_the_stage_that_makes_its_missing_input(tmp_path):
    recipe = _recipe_copy(tmp_path, "librispeech")
    proc = _run(recipe, "--stage", "9")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert ("this stage needs data/fbank/librispeech_cuts_train-clean-100.jsonl.gz, which stage 2 (fbank) "
            "makes: run ./run.sh --stage 2 first, with the same options") in proc.stderr
    proc = _run(recipe, "--stage", "10", "--epoch", "5", "--avg", "1")
    assert "this stage needs exp/ctc_fbank/epoch-5.pt, which stage 9 (train) makes" in proc.stderr


def test_a_corpus_in_the_wrong_layout_gets_one_message(tmp_path, aishell_tiny, librispeech_tiny):
    recipe = _recipe_copy(tmp_path, "librispeech")
    aishell = tmp_path / "aishell"
    aishell.mkdir()
    (aishell / "data_aishell").symlink_to(aishell_tiny)
    proc = _run(recipe, "--corpus-dir", str(aishell))
    assert proc.returncode != 0
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "expected the LibriSpeech layout" in line and "found the AISHELL-1 layout" in line
    proc = _run(recipe, "--corpus-dir", str(librispeech_tiny.parent))
    assert f"holds LibriSpeech/: give --corpus-dir {librispeech_tiny}" in proc.stderr
    assert not (recipe / "data").exists()


def _lock_file(recipe: Path, part: str = "train-clean-100") -> Path:
    return recipe / f"data/fbank/.librispeech_cuts_{part}.json.lock"


def test_a_second_run_building_the_same_thing_stops(recipe, monkeypatch):
    """Another run holds stage 2's train part: this one stops and names it, and nothing is
    touched; once it is gone, the changed option rebuilds that part and only that part."""
    cuts = recipe / "data/fbank/librispeech_cuts_train-clean-100.jsonl.gz"
    before = cuts.read_bytes()
    with open(_lock_file(recipe), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _lock_file(recipe).write_text("pid 4242 since 2026-11-30 10:00:00: ./run.sh --stage 2\n")
        proc = _run(recipe, *TINY, "--stage", "2", "--stop-stage", "2", "--speed-perturb", "true")
    assert proc.returncode != 0
    assert ("fbank train-clean-100: another run is building this now (pid 4242 since 2026-11-30 10:00:00: "
            "./run.sh --stage 2); wait for it or stop it") in proc.stderr
    assert cuts.read_bytes() == before

    proc = _run(recipe, *TINY, "--stage", "2", "--stop-stage", "2", "--speed-perturb", "true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "  fbank train-clean-100: rebuild: option speed_perturb changed (false -> true)" in proc.stdout
    assert "  fbank dev-clean: up to date" in proc.stdout
    from lhotse import CutSet

    monkeypatch.chdir(recipe)
    perturbed = CutSet.from_file(cuts)
    assert sum(c.id.endswith("_sp0.9") for c in perturbed) == len(perturbed) // 3
    next(iter(perturbed)).load_features()  # the storage is whole


def test_a_killed_stage_is_recognised_and_resumed(recipe):
    """A run killed inside stage 2 (SIGKILL: no cleanup) leaves its lock file and a 'running'
    record; the kernel has released the lock, and the next run says what happened."""
    lock = _lock_file(recipe, "dev-clean")
    record = lock.with_suffix("")
    record.unlink()  # as if the stage were being rebuilt
    script = (f"exec 9>>{lock}; flock -n 9 || exit 3; echo \"pid $$ since now: ./run.sh\" > {lock}; "
              f"{REPO}/.venv/bin/python -m w2v.bin.stage_record begin --record {record} --stage 'fbank dev-clean' "
              f"--pid $$ --inputs data/manifests/librispeech_recordings_dev-clean.jsonl.gz "
              f"data/manifests/librispeech_supervisions_dev-clean.jsonl.gz --options speed_perturb=false "
              f"--outputs data/fbank/librispeech_cuts_dev-clean.jsonl.gz data/fbank/librispeech_feats_dev-clean "
              f">/dev/null; kill -9 $$")
    killed = subprocess.run(["bash", "-c", script], cwd=recipe)
    assert killed.returncode == -9
    pid = re.search(r"pid (\d+)", lock.read_text()).group(1)
    proc = _run(recipe, *TINY, "--stage", "2", "--stop-stage", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"  fbank dev-clean: resume: the run that started it (pid {pid}, " in proc.stdout
    assert "did not finish" in proc.stdout
    assert '"status": "done"' in record.read_text()
    assert (recipe / "data/fbank/librispeech_cuts_dev-clean.jsonl.gz").is_file()


def test_audio_added_to_a_part_is_seen(recipe):
    part = recipe / "download/LibriSpeech/test-clean"
    trans = next(part.rglob("*.trans.txt"))
    first = trans.read_text().splitlines()[0]
    uid, text = first.split(maxsplit=1)
    new_uid = uid.rsplit("-", 1)[0] + "-9999"
    shutil.copy(trans.parent / f"{uid}.flac", trans.parent / f"{new_uid}.flac")
    trans.write_text(trans.read_text() + f"{new_uid} {text}\n")
    proc = _run(recipe, *TINY, "--stage", "1", "--stop-stage", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "  manifests test-clean: rebuild: input download/LibriSpeech/test-clean changed" in proc.stdout
    assert "  manifests dev-clean: up to date" in proc.stdout
    assert "  fbank test-clean: rebuild: input data/manifests/librispeech_recordings_test-clean.jsonl.gz changed" in proc.stdout
    from lhotse import CutSet

    assert new_uid in CutSet.from_file(recipe / "data/fbank/librispeech_cuts_test-clean.jsonl.gz").ids


def test_other_aishell_train_parts_rebuild_g_and_hlg(tmp_path):
    """Other train parts give another words.txt: the LMs, G and HLG follow, with the new word ids."""
    import k2
    import torch

    from w2v.lang.lexicon import load_fsa
    from w2v.lang.symbols import read_symbol_table

    recipe = _recipe_copy(tmp_path, "aishell")
    proc = _run(recipe, "--synth-size", "tiny", "--stop-stage", "6")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    words_before = read_symbol_table(recipe / "data/lang_char/words.txt")
    proc = _run(recipe, "--synth-size", "tiny", "--train-parts", "train dev", "--stop-stage", "6")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "  transcripts: rebuild: new input data/manifests/aishell_supervisions_dev.jsonl.gz" in out
    assert "  lang: rebuild: input data/lang_char/transcript_words.txt changed" in out
    assert "  n-gram LMs: rebuild: input data/lang_char/transcript_words.txt changed; input data/lang_char/words.txt changed" in out
    assert "  HLG: rebuild: " in out and "input data/lang_char/words.txt changed" in out
    words = read_symbol_table(recipe / "data/lang_char/words.txt")
    new = {w for w in words if w not in words_before}
    assert new  # dev brought words the train part does not have
    hlg = load_fsa(recipe / "data/lang_char/HLG.pt")
    aux = hlg.aux_labels
    hlg_words = set((aux.values if isinstance(aux, k2.RaggedTensor) else aux).tolist()) - {0, -1}
    assert {words[w] for w in new} <= hlg_words  # the graph knows the new words by their new ids
    g4 = load_fsa(recipe / "data/lm/G_4_gram.pt")
    assert int(torch.max(g4.labels)) < len(words)


def test_the_option_lists_are_the_python_ones():
    from w2v.asr.model import MODEL_SIZES
    from w2v.decode.attention import ATTENTION_METHODS
    from w2v.decode.ctc import METHODS
    from w2v.ssl.train import SSL_MODELS, SSL_SIZES

    text = (REPO / "local/ctc_options.sh").read_text()
    assert re.search(r'^decoding_methods="(.*)"$', text, re.M).group(1).split() == list(METHODS + ATTENTION_METHODS)
    assert re.search(r'^known_ssl_models="(.*)"$', text, re.M).group(1).split() == list(SSL_MODELS)
    assert re.search(r'^ssl_sizes="(.*)"$', text, re.M).group(1).split() == list(SSL_SIZES)
    assert re.search(r'^model_sizes="(.*)"$', text, re.M).group(1).split() == list(MODEL_SIZES)


def test_a_wenet_data_dir_is_a_corpus(tmp_path, aishell_tiny):
    """The tiny AISHELL corpus exported to wenet's data dirs, prepared back by run.sh stage 1:
    the same utterances and transcripts as from the AISHELL layout."""
    import subprocess
    import sys

    from lhotse import SupervisionSet

    first = _recipe_copy(tmp_path / "a", "aishell")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "data_aishell").symlink_to(aishell_tiny)
    proc = _run(first, "--corpus-dir", str(corpus), "--stop-stage", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    wenet = tmp_path / "wenet"
    subprocess.run([sys.executable, "-m", "w2v.bin.export_wenet", "--manifest-dir", str(first / "data/manifests"),
                    "--parts", "train", "dev", "test", "--out-dir", str(wenet), "--words", "true"],
                   check=True, cwd=first)
    assert sorted(p.name for p in (wenet / "test").iterdir()) == ["data.list", "text", "utt2spk", "wav.scp"]
    second = _recipe_copy(tmp_path / "b", "aishell")
    proc = _run(second, "--corpus-dir", str(wenet), "--stop-stage", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for part in ("train", "dev", "test"):
        a, b = (SupervisionSet.from_file(r / f"data/manifests/aishell_supervisions_{part}.jsonl.gz")
                for r in (first, second))
        assert {s.id: s.text for s in a} == {s.id: s.text for s in b}
