"""w2v.serialization.load: no code from a file runs, and every refusal or corruption names the file.

Each payload would create a marker file when unpickled (the control test proves it does); each
shape puts it where a loader of the project reads it. Loading must fail naming the file and the
global, and the marker must not exist afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import time
import types
from dataclasses import asdict

import k2
import numpy as np
import pytest
import soundfile as sf
import torch

import w2v.models as M
from w2v.serialization import CheckpointError, StandIn, load, plain


class _Call:
    """Pickles as ``fn(*args)``: what a malicious checkpoint hides in a config."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payload(kind: str, marker) -> _Call:
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": lambda: _Call(os.system, f"touch {marker}"),
        "builtins.eval": lambda: _Call(eval, code),
        "subprocess.Popen": lambda: _Call(subprocess.Popen, ["touch", str(marker)]),
        "builtins.exec": lambda: _Call(exec, code),
    }[kind]()


PAYLOADS = ["os.system", "builtins.eval", "subprocess.Popen", "builtins.exec"]


def _assert_nothing_ran(kind: str, marker) -> None:
    if kind == "subprocess.Popen":
        time.sleep(0.2)  # a spawned `touch` would have finished by now
    assert not marker.exists(), f"the {kind} payload ran"


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payloads_run_when_unpickled_without_restriction(tmp_path, kind):
    """Control: each payload really runs under a plain unpickler, so the tests below can fail."""
    marker = tmp_path / "ran"
    result = pickle.loads(pickle.dumps(_payload(kind, marker), protocol=2))
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()


# ----------------------------------------------------------------------------------------------
# Shapes: (tmp_path, payload) -> (path named in the error, the loading call)


def _fairseq_cfg(tmp_path, payload):
    path = tmp_path / "wav2vec_small.pt"
    torch.save({"cfg": {"model": {"_name": "wav2vec2", "conv_feature_layers": payload}, "task": {}},
                "model": {"mask_emb": torch.zeros(4)}}, path)
    return path, lambda: M.load_pretrained(path)


def _fairseq_args(tmp_path, payload):
    path = tmp_path / "hubert_ft.pt"
    args = argparse.Namespace(arch="hubert_ctc", w2v_args=argparse.Namespace(arch="hubert", normalize=payload))
    torch.save({"args": args, "model": {}}, path)
    return path, lambda: M.load_pretrained(path)


HF_CONFIG = dict(model_type="wav2vec2", conv_dim=[8, 8], conv_kernel=[10, 3], conv_stride=[5, 2],
                 hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                 num_conv_pos_embedding_groups=2)


def _hf_bin(tmp_path, payload):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(HF_CONFIG))
    path = tmp_path / "hf" / "pytorch_model.bin"
    torch.save({"wav2vec2.masked_spec_embed": payload}, path)
    return path, lambda: M.load_pretrained(tmp_path / "hf")


def _ctc_checkpoint(tmp_path, payload, epoch=1):
    from w2v.asr.model import KIND, AsrConfig

    path = tmp_path / "exp" / f"epoch-{epoch}.pt"
    path.parent.mkdir(exist_ok=True)
    config = {**asdict(AsrConfig()), "d_model": payload}
    torch.save({"model": {}, "config": config, "kind": KIND, "epoch": epoch, "optimizer": {}}, path)
    return path


def _ctc_load_checkpoint(tmp_path, payload):
    from w2v.asr.checkpoint import load_checkpoint

    path = _ctc_checkpoint(tmp_path, payload)
    return path, lambda: load_checkpoint(path)


def _ctc_load_averaged(tmp_path, payload):
    from w2v.asr.checkpoint import load_averaged

    path = _ctc_checkpoint(tmp_path, payload)
    return path, lambda: load_averaged(tmp_path / "exp", 1, 1)


def _ctc_resume(tmp_path, payload):
    from w2v.asr.model import AsrConfig
    from w2v.asr.train import TrainConfig, train

    lang = tmp_path / "lang_char"
    lang.mkdir()
    (lang / "tokens.txt").write_text("<blk> 0\n<unk> 1\nA 2\nB 3\n#0 4\n")
    path = _ctc_checkpoint(tmp_path, payload)
    # start_epoch 0: the newest checkpoint that loads; one that would run code stops the run
    cfg = TrainConfig(exp_dir=str(tmp_path / "exp"), lang_dir=str(lang), token_type="char",
                      train_cuts=["unused.jsonl.gz"], start_epoch=0, num_epochs=2, progress=False)
    return path, lambda: train(cfg, AsrConfig())


def _ssl_checkpoint(tmp_path, payload):
    path = tmp_path / "exp_ssl" / "checkpoint-2.pt"
    path.parent.mkdir()
    model = M.wav2vec2_tiny()
    torch.save({"model": model.state_dict(), "config": M.config_to_dict(model.config), "kind": "wav2vec2",
                "ssl_model": "wav2vec2", "step": 2, "epoch": 0, "pretrainer": {}, "optimizer": payload}, path)
    return path


def _ssl_load_pretrained(tmp_path, payload):
    path = _ssl_checkpoint(tmp_path, payload)
    return path, lambda: M.load_pretrained(path)


def _ssl_resume(tmp_path, payload):
    from lhotse import CutSet, Recording

    from w2v.ssl.train import PretrainConfig, pretrain

    path = _ssl_checkpoint(tmp_path, payload)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    cuts = tmp_path / "cuts.jsonl.gz"
    CutSet.from_manifests(recordings=[Recording.from_file(wav)]).to_file(cuts)
    cfg = PretrainConfig(ssl_model="wav2vec2", cuts=[str(cuts)], exp_dir=str(path.parent), num_steps=4,
                         device="cpu", tensorboard=False, progress=False)
    return path, lambda: pretrain(cfg)


def _kmeans(tmp_path, payload):
    from w2v.ssl.kmeans import KMeans

    path = tmp_path / "kmeans.pt"
    torch.save({"centroids": payload}, path)
    return path, lambda: KMeans.load(path)


def _graph(tmp_path, payload):
    from w2v.lang.lexicon import load_fsa

    path = tmp_path / "HLG.pt"
    torch.save({"arcs": torch.zeros(1, 4, dtype=torch.int32), "aux_labels": payload}, path)
    return path, lambda: load_fsa(path)


SHAPES = {
    "fairseq-cfg": _fairseq_cfg,
    "fairseq-args": _fairseq_args,
    "hf-pytorch_model.bin": _hf_bin,
    "ctc-load_checkpoint": _ctc_load_checkpoint,
    "ctc-load_averaged": _ctc_load_averaged,
    "ctc-train-resume": _ctc_resume,
    "ssl-load_pretrained": _ssl_load_pretrained,
    "ssl-pretrain-resume": _ssl_resume,
    "kmeans": _kmeans,
    "graph": _graph,
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_is_refused_and_never_runs(tmp_path, kind, shape):
    marker = tmp_path / "ran"
    path, load_it = SHAPES[shape](tmp_path, _payload(kind, marker))
    global_name = r"(posix|nt)\.system \(os\.system\)" if kind == "os.system" else re.escape(kind)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: refuses to load: .*{global_name}"):
        load_it()
    _assert_nothing_ran(kind, marker)


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize("how", ["legacy-format", "pickle-protocol-4"])
def test_payload_in_other_file_formats_is_refused(tmp_path, kind, how):
    """torch's pre-1.6 format and a bare pickle (STACK_GLOBAL) are scanned the same way."""
    marker, path = tmp_path / "ran", tmp_path / "model.pt"
    obj = {"model": {}, "cfg": {"model": _payload(kind, marker)}}
    if how == "legacy-format":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=4))
    name = "os.system" if kind == "os.system" else kind
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: refuses to load: .*{re.escape(name)}"):
        load(path)
    _assert_nothing_ran(kind, marker)


def test_state_set_on_an_allowed_class_is_refused(tmp_path):
    """A pickle that BUILDs onto ``argparse.Namespace`` itself (patching the class) is refused."""
    path = tmp_path / "patch.pt"
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION,
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
    ))
    # GLOBAL argparse.Namespace; state (None, {"__repr__": builtins.int}); BUILD; STOP
    body = b"\x80\x02cargparse\nNamespace\nN}X\x08\x00\x00\x00__repr__c__builtin__\nint\ns\x86b."
    path.write_bytes(header + body)
    before = argparse.Namespace.__repr__
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: refuses to load: Can only build"):
        load(path)
    assert argparse.Namespace.__repr__ is before


def test_fairseq_classes_become_stand_ins_and_are_never_imported(tmp_path, monkeypatch):
    """Even with a module of that name importable, its class is not used: its __setstate__ and
    constructor would create the marker."""
    marker = tmp_path / "ran"
    fake = types.ModuleType("fairseq.data.dictionary")

    class Dictionary:
        def __init__(self, symbols):
            self.symbols = symbols

        def __setstate__(self, state):
            open(marker, "w").close()

        def __reduce__(self):
            return Dictionary, (self.symbols,), {"indices": {"a": 0}}

    Dictionary.__module__, Dictionary.__qualname__ = fake.__name__, "Dictionary"
    fake.Dictionary = Dictionary
    for parent in ("fairseq", "fairseq.data"):  # pickle imports the package to find the class
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    path = tmp_path / "hubert_base.pt"
    torch.save({"task_state": {"dictionaries": [Dictionary(["<s>", "a"])]}, "score": np.float64(0.5)}, path)
    saved = load(path)
    d = saved["task_state"]["dictionaries"][0]
    assert isinstance(d, StandIn) and not isinstance(d, Dictionary)
    assert d.global_name == "fairseq.data.dictionary.Dictionary"
    assert d.args == (["<s>", "a"],) and d.state == {"indices": {"a": 0}}
    assert plain(d) == {"indices": {"a": 0}}
    assert isinstance(saved["score"], StandIn) and saved["score"].global_name.startswith("numpy.")
    assert not marker.exists()


def test_missing_truncated_and_corrupt_files_name_the_file(tmp_path):
    model = M.wav2vec2_tiny()
    good = tmp_path / "good.pt"
    M.save_checkpoint(model, good)
    data = good.read_bytes()

    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.pt"))):
        load(tmp_path / "none.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(truncated))}: truncated or corrupt checkpoint"):
        load(truncated)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(truncated))}: truncated or corrupt"):
        M.load_pretrained(truncated)
    # a zip cut anywhere loses its central directory
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(truncated)
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    for cut in (100, len(legacy.read_bytes()) - 10):
        truncated.write_bytes(legacy.read_bytes()[:cut])
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(truncated))}: truncated or corrupt"):
            load(truncated)
    truncated.write_bytes(b"\x00not a torch file at all" * 10)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(truncated))}: truncated or corrupt"):
        load(truncated)
    # the good file and its legacy twin still load, with equal tensors
    a, b = load(good)["model"], load(legacy)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# The project's own files load with plain torch.load(weights_only=True)


def test_pretraining_checkpoint_kmeans_and_graphs_need_no_unsafe_globals(tmp_path):
    from lhotse import CutSet, Recording

    from tests.helpers import TOY_SENTENCES
    from w2v.lang.arpa import train_arpa
    from w2v.lang.bpe import train_bpe
    from w2v.lang.graph import compile_graphs
    from w2v.lang.lexicon import load_fsa, prepare_lang
    from w2v.ssl.train import PretrainConfig, pretrain

    rng = np.random.default_rng(0)
    recordings = []
    for i in range(4):
        sf.write(tmp_path / f"{i}.wav", rng.standard_normal(24000).astype(np.float32) * 0.1, 16000)
        recordings.append(Recording.from_file(tmp_path / f"{i}.wav"))
    CutSet.from_manifests(recordings=recordings).to_file(tmp_path / "cuts.jsonl.gz")
    result = pretrain(PretrainConfig(
        ssl_model="hubert", cuts=[str(tmp_path / "cuts.jsonl.gz")], exp_dir=str(tmp_path / "exp"), num_steps=1,
        max_duration=6.0, crop_seconds=1.0, num_buckets=2, num_clusters=4, device="cpu", tensorboard=False,
        progress=False,
        encoder_overrides={"layerdrop": 0.0},
    ))
    lang, lm = tmp_path / "lang_bpe", tmp_path / "lm"
    lang.mkdir()
    (lang / "transcript_words.txt").write_text("\n".join(TOY_SENTENCES) + "\n")
    train_bpe(lang / "transcript_words.txt", lang / "bpe.model", vocab_size=30)
    prepare_lang(lang, "bpe")
    train_arpa(lang / "transcript_words.txt", lm / "3gram.arpa", order=3)
    train_arpa(lang / "transcript_words.txt", lm / "4gram.arpa", order=4)
    compile_graphs(lang, lm)

    files = [result.last_checkpoint, tmp_path / "exp" / "kmeans.pt", lang / "L.pt", lang / "L_disambig.pt",
             lang / "HLG.pt", lm / "G_4_gram.pt"]
    for path in files:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
        torch.load(path, weights_only=True)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert {"model", "config", "kind", "pretrainer", "optimizer", "scheduler", "train_config"} <= set(ckpt)

    # HLG's word labels are ragged; they come back as they were built
    HLG = load_fsa(lang / "HLG.pt")
    assert isinstance(HLG.aux_labels, k2.RaggedTensor) and HLG.aux_labels.values.numel() > 0
    # a graph written by earlier versions (k2's RaggedTensor pickled) still loads, equal
    legacy = tmp_path / "HLG_legacy.pt"
    torch.save(HLG.as_dict(), legacy)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(legacy) == ["_k2.ragged.RaggedTensor"]
    old = load_fsa(legacy)
    assert torch.equal(old.arcs.values(), HLG.arcs.values()) and torch.equal(old.tokens, HLG.tokens)
    assert old.aux_labels == HLG.aux_labels
