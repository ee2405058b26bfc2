"""w2v.bin.decode on a real (random, frame-wise) model: a long recording decoded in windows and
joined, and decoding split over 2 torchrun processes giving what one process gives."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, Features, MonoCut, NumpyFilesWriter, SupervisionSegment

from tests.helpers import TOY_SENTENCES, build_lang_and_graphs
from w2v.asr.model import KIND, AsrConfig, build_model
from w2v.bin.decode import main as decode_main
from w2v.lang.symbols import read_symbol_table
from w2v.utils import atomic_torch_save

DIM, SHIFT = 20, 0.04


def _cuts(storage: Path, seconds: list[float]) -> CutSet:
    rng = np.random.default_rng(0)
    cuts = []
    with NumpyFilesWriter(storage) as writer:
        for i, s in enumerate(seconds):
            frames = int(round(s / SHIFT))
            cid = f"utt{i:02d}"
            key = writer.write(cid, rng.standard_normal((frames, DIM)).astype(np.float32))
            text = " ".join(TOY_SENTENCES[i % len(TOY_SENTENCES)] for _ in range(max(1, int(s // 5))))
            features = Features(type="fbank", num_frames=frames, num_features=DIM, frame_shift=SHIFT,
                                sampling_rate=16000, start=0.0, duration=frames * SHIFT,
                                storage_type=writer.name, storage_path=str(storage), storage_key=key)
            cuts.append(MonoCut(id=cid, start=0.0, duration=frames * SHIFT, channel=0, features=features,
                                supervisions=[SupervisionSegment(id=cid, recording_id=cid, start=0.0,
                                                                 duration=frames * SHIFT, text=text)]))
    return CutSet.from_cuts(cuts)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_real")
    lang, lm = build_lang_and_graphs(root, TOY_SENTENCES, token_type="char")
    tokens = read_symbol_table(lang / "tokens.txt")
    num_tokens = sum(not t.startswith("#") for t in tokens)
    # frame-wise (a linear head, no normalisation over the utterance): windows change nothing but
    # what crosses a window boundary
    config = AsrConfig(num_tokens=num_tokens, feature_dim=DIM, subsampling=1, head="linear",
                       normalize_input=False)
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.output.bias[0] += 2.0  # enough blanks that the hypotheses are readable
    ckpt = root / "model.pt"
    atomic_torch_save({"model": model.state_dict(), "config": asdict(config), "kind": KIND}, ckpt)
    cuts = root / "toy_cuts_test.jsonl.gz"
    _cuts(root / "feats", [4.0, 6.0, 70.0, 3.0, 5.0, 8.0, 2.5]).to_file(cuts)
    return root, lang, lm, ckpt, cuts


def _args(setup, exp, *extra):
    root, lang, lm, ckpt, cuts = setup
    return ["--exp-dir", str(exp), "--epoch", "1", "--checkpoint", str(ckpt), "--lang-dir", str(lang),
            "--lm-dir", str(lm), "--cuts", str(cuts), "--decoding-method", "ctc-greedy-search,1best",
            "--max-duration", "35", "--device", "cpu", *extra]


def _recogs(exp: Path, method: str) -> dict[str, tuple[list, list]]:
    out: dict[str, dict] = {}
    key = "lm_scale_1.0" if method == "1best" else method
    path = exp / method / f"recogs-test-{key}-epoch-1-avg-1.txt"
    for line in path.read_text().splitlines():
        cut_id, field = line.split(":\t", 1)
        kind, value = field.split("=", 1)
        out.setdefault(cut_id, {})[kind] = ast.literal_eval(value)
    return {k: (v["ref"], v["hyp"]) for k, v in out.items()}


def test_a_long_recording_is_decoded_in_windows_and_joined(setup, tmp_path, capsys):
    import kaldialign

    root, *_ = setup
    whole, windows = tmp_path / "whole", tmp_path / "windows"
    decode_main(_args(setup, whole, "--max-cut-seconds", "0"))
    capsys.readouterr()
    decode_main(_args(setup, windows, "--max-cut-seconds", "30"))
    assert "test: 1 recordings longer than 30 s decoded in 3 windows" in capsys.readouterr().err
    a, b = _recogs(whole, "ctc-greedy-search"), _recogs(windows, "ctc-greedy-search")
    assert a.keys() == b.keys() and len(a) == 7
    assert a["utt02"][0] == b["utt02"][0] == " ".join([TOY_SENTENCES[2]] * 14).split()  # the whole reference
    for cut in a:
        if cut != "utt02":
            assert a[cut] == b[cut]
    # a window boundary can split one repeated token, nothing else: 2 boundaries
    joined, full = "".join(b["utt02"][1]), "".join(a["utt02"][1])
    assert len(full) > 100
    assert kaldialign.edit_distance(list(full), list(joined))["total"] <= 2
    assert _recogs(windows, "1best")["utt02"][0] == a["utt02"][0]


def test_two_torchrun_processes_decode_what_one_does(setup, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    decode_main(_args(setup, one))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "w2v.bin.decode", *_args(setup, two)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads((d / "results.json").read_text()) for d in (one, two)]
    from w2v.decode.ctc import DEFAULT_LM_SCALES

    assert rows[0] == rows[1] and len(rows[0]) == 1 + len(DEFAULT_LM_SCALES)  # greedy, 1best per scale
    for method in ("ctc-greedy-search", "1best"):
        assert _recogs(one, method) == _recogs(two, method)
    assert proc.stdout.count("decoding method") == 1  # rank 0 alone prints the table


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decoding_on_cuda_gives_the_cpu_results(setup, tmp_path):
    """The network on the GPU (and the search too with a CUDA k2): the same hypotheses."""
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    decode_main(_args(setup, cpu))
    decode_main([a if a != "cpu" else "cuda" for a in _args(setup, gpu)])
    for method in ("ctc-greedy-search", "1best"):
        assert _recogs(cpu, method) == _recogs(gpu, method)
