"""The pretraining loop and its entry point on the tiny synthetic LibriSpeech."""

import dataclasses
import json

import pytest
import torch

from w2v.models import load_pretrained
from w2v.ssl.train import PretrainConfig, RawAudioDataset, list_checkpoints, lr_factor, pretrain


@pytest.fixture(scope="module")
def cuts_file(librispeech_tiny_cuts, tmp_path_factory):
    path = tmp_path_factory.mktemp("ssl_cuts") / "librispeech_cuts_train-clean-100.jsonl.gz"
    librispeech_tiny_cuts["train-clean-100"].to_file(path)
    return path


def small(cuts_file, exp_dir, **kw):
    values = dict(
        cuts=[str(cuts_file)], exp_dir=str(exp_dir), max_duration=6.0, crop_seconds=1.5,
        progress=False, log_interval=1, lr=1e-3, warmup_steps=1,
        encoder_overrides={"layerdrop": 0.0},
    )
    values.update(kw)
    return PretrainConfig(**values)


def test_lr_schedule():
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == 0.0


def test_random_crop(librispeech_tiny_cuts):
    cuts = librispeech_tiny_cuts["train-clean-100"].subset(first=3)
    batch = RawAudioDataset(crop_seconds=0.5, seed=0)[cuts]
    assert batch["waveforms"].shape == (3, 8000) and batch["lengths"].tolist() == [8000] * 3
    full = torch.as_tensor(next(iter(cuts)).load_audio())[0]
    crop = batch["waveforms"][0]
    # the crop is a contiguous piece of the utterance
    starts = [s for s in range(full.numel() - 8000 + 1) if torch.equal(full[s : s + 8000], crop)]
    assert len(starts) >= 1


def test_wav2vec2_checkpoints_resume_and_load(cuts_file, tmp_path):
    exp = tmp_path / "exp"
    cfg = small(cuts_file, exp, ssl_model="wav2vec2", num_steps=4, accum_grad=2, save_every=2, keep_last=2)
    result = pretrain(cfg)
    assert [h["step"] for h in result.history] == [1, 2, 3, 4]
    assert [s for s, _ in list_checkpoints(exp)] == [2, 4]
    ckpt = torch.load(exp / "checkpoint-4.pt", map_location="cpu", weights_only=False)
    assert ckpt["kind"] == "wav2vec2" and ckpt["step"] == 4 and ckpt["ssl_model"] == "wav2vec2"
    assert {"model", "config", "optimizer", "scheduler", "pretrainer"} <= set(ckpt)
    assert any(k.startswith("quantizer.") for k in ckpt["pretrainer"])
    assert not any(k.startswith("quantizer.") for k in ckpt["model"])
    # the encoder is what load_pretrained rebuilds, with the trained weights
    model, config = load_pretrained(exp / "checkpoint-4.pt")
    assert config.embed_dim == 64
    for k, v in result.pretrainer.encoder.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert (exp / "tensorboard").is_dir() and any((exp / "tensorboard").iterdir())
    saved = json.loads((exp / "config.json").read_text())
    assert saved["kind"] == "wav2vec2" and saved["objective"]["num_negatives"] == 100
    # resume: continues from step 4 with the saved optimizer state
    again = pretrain(small(cuts_file, exp, ssl_model="wav2vec2", num_steps=6, accum_grad=2, save_every=2, keep_last=2))
    assert [h["step"] for h in again.history] == [5, 6]
    assert [s for s, _ in list_checkpoints(exp)] == [4, 6]
    ckpt6 = torch.load(exp / "checkpoint-6.pt", map_location="cpu", weights_only=False)
    assert ckpt6["scheduler"]["last_epoch"] == 6
    with pytest.raises(ValueError, match="not 'hubert'"):
        pretrain(small(cuts_file, exp, ssl_model="hubert", num_steps=8))


@pytest.mark.parametrize("family", ["wav2vec", "vq_wav2vec", "data2vec", "hubert", "wavlm"])
def test_every_family_trains_and_reloads(family, cuts_file, tmp_path):
    overrides = {} if family in ("wav2vec", "vq_wav2vec") else {"layerdrop": 0.0}
    cfg = small(cuts_file, tmp_path, ssl_model=family, num_steps=2, num_clusters=8, encoder_overrides=overrides)
    result = pretrain(cfg)
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    model, config = load_pretrained(result.last_checkpoint)
    assert type(config).kind == result.pretrainer.encoder_kind
    layers, _ = model.extract_features(torch.randn(1, 8000))
    assert layers[-1].shape[0] == 1 and layers[-1].shape[1] > 0
    if family in ("hubert", "wavlm"):
        assert (tmp_path / "kmeans.pt").is_file()


def test_cli_entry_point(cuts_file, tmp_path, capsys):
    from w2v.bin.pretrain import main

    rc = main([
        "--ssl-model", "vq_wav2vec", "--vq-quantizer", "kmeans", "--size", "tiny", "--cuts", str(cuts_file),
        "--exp-dir", str(tmp_path), "--num-steps", "3", "--max-duration", "6", "--crop-seconds", "1.5",
        "--progress", "false", "--tensorboard", "false", "--objective", '{"num_negatives": 5}',
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert "step 1: loss" in out and "step 3: loss" in out
    ckpt = torch.load(tmp_path / "checkpoint-3.pt", map_location="cpu", weights_only=False)
    assert ckpt["kind"] == "vq_wav2vec" and ckpt["config"]["quantizer"] == "kmeans"
    assert ckpt["objective"]["num_negatives"] == 5


@pytest.mark.slow
def test_ddp_two_processes(cuts_file, tmp_path):
    """torchrun, gloo on CPU: both ranks step together and rank 0 writes the checkpoint."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "w2v.bin.pretrain",
        "--ssl-model", "wav2vec2", "--cuts", str(cuts_file), "--exp-dir", str(tmp_path), "--num-steps", "2",
        "--max-duration", "4", "--crop-seconds", "1", "--accum-grad", "2", "--progress", "false",
        "--tensorboard", "false", "--encoder", '{"layerdrop": 0.0}',
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("step 2: loss") == 1  # only rank 0 reports
    ckpt = torch.load(tmp_path / "checkpoint-2.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2
    load_pretrained(tmp_path / "checkpoint-2.pt")


def test_hubert_second_iteration_uses_layer_kmeans(cuts_file, tmp_path):
    first = pretrain(small(cuts_file, tmp_path / "it1", ssl_model="hubert", num_steps=1, num_clusters=8))
    second = pretrain(small(
        cuts_file, tmp_path / "it2", ssl_model="hubert", num_steps=2, num_clusters=10,
        label_checkpoint=str(first.last_checkpoint), label_layer=2,
    ))
    from w2v.ssl.kmeans import KMeans, LayerLabeler

    km = KMeans.load(tmp_path / "it2" / "kmeans.pt")
    assert km.centroids.shape == (10, 64)  # clusters of the 64-dim block outputs, not 39-dim MFCC
    assert isinstance(second.pretrainer.labeler, LayerLabeler)
    assert second.pretrainer.label_embeddings.shape[0] == 10


def test_tiny_wav2vec2_preset_is_resolved(cuts_file, tmp_path):
    from w2v.ssl.train import TINY_WAV2VEC2_LR, build_pretrainer, default_lr

    cfg = PretrainConfig(ssl_model="wav2vec2", size="tiny", cuts=[str(cuts_file)], exp_dir=str(tmp_path))
    assert default_lr(cfg) == TINY_WAV2VEC2_LR == 5e-3
    assert default_lr(PretrainConfig(ssl_model="wav2vec2", size="base")) == 5e-4
    assert default_lr(PretrainConfig(ssl_model="wav2vec2", size="tiny", lr=1e-4)) == 1e-4
    p = build_pretrainer(cfg)
    assert p.config.feature_penalty_weight == 0.0 and p.config.num_negatives == 100
    assert p.config.diversity_weight == 0.1 and p.config.logit_temperature == 0.1  # the paper's loss
    assert p.encoder.config.dropout == 0.0 and p.encoder.config.layerdrop == 0.0
    p.set_num_updates(200)
    assert p.quantizer.temperature == 0.5
    # explicit overrides still win over the preset
    cfg = dataclasses.replace(cfg, objective_overrides={"feature_penalty_weight": 10.0}, encoder_overrides={"dropout": 0.1})
    p = build_pretrainer(cfg)
    assert p.config.feature_penalty_weight == 10.0 and p.encoder.config.dropout == 0.1


def test_small_size_reads_log_mels_and_its_checkpoint_extracts_features(cuts_file, tmp_path):
    """--size small: 4 x 128 on stacked log-mels, its presets, and a checkpoint the feature stage reads."""
    from lhotse import CutSet
    from lhotse.utils import compute_num_frames

    from w2v.features.ssl import SslFeatureExtractor
    from w2v.ssl.train import build_pretrainer, default_lr

    assert default_lr(PretrainConfig(ssl_model="hubert", size="small")) == 2e-3
    cfg = small(cuts_file, tmp_path, ssl_model="hubert", size="small", num_steps=2, num_clusters=8, lr=None)
    result = pretrain(cfg)
    p = result.pretrainer
    assert p.config.feature_penalty_weight == 0.0 and p.config.final_dim == 128
    assert (p.encoder.config.embed_dim, p.encoder.config.num_layers, p.encoder.config.feature_encoder) == (128, 4, "fbank")
    assert not list(p.encoder.feature_extractor.parameters())
    model, config = load_pretrained(result.last_checkpoint)
    assert config == p.encoder.config
    cut = next(iter(CutSet.from_file(cuts_file)))
    feats = SslFeatureExtractor(str(result.last_checkpoint), layer=2).extract_cut(cut)
    assert feats.shape == (compute_num_frames(cut.duration, 0.02, 16000), 128)
    with pytest.raises(ValueError, match="wav2vec has no size 'small'"):
        build_pretrainer(PretrainConfig(ssl_model="wav2vec", size="small"))


def test_bf16_autocast_step_stays_close_to_fp32(cuts_file, tmp_path):
    """The bf16 path trains the same model: first-step losses agree, weights stay fp32."""
    runs = {}
    for bf16 in (False, True):
        cfg = small(cuts_file, tmp_path / f"bf16_{bf16}", ssl_model="wav2vec2", num_steps=2, bf16=bf16,
                    save_every=2, seed=3, encoder_overrides={"layerdrop": 0.0, "dropout": 0.0})
        runs[bf16] = pretrain(cfg)
    fp32, bf16 = runs[False].history[0], runs[True].history[0]
    assert fp32["loss"] == pytest.approx(bf16["loss"], rel=0.05)
    assert fp32["loss"] != bf16["loss"]  # autocast really ran in bf16
    ckpt = torch.load(tmp_path / "bf16_True" / "checkpoint-2.pt", map_location="cpu", weights_only=False)
    assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.float32}
