"""SSL feature extraction: values equal the encoder's layer, lhotse frame counts, bf16, storage,
bad audio, rerun skip and the guard against mixing feature sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.utils import compute_num_frames

from w2v.features import ssl as S
from w2v.models import save_checkpoint, wav2vec2_tiny

SR = 16000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ssl") / "tiny.pt"
    save_checkpoint(wav2vec2_tiny().eval(), path)
    return path


def _cuts(root, samples, corrupt=()):
    """One cut per length in ``samples`` (speech-like noise bursts); ``corrupt`` ones garbled."""
    rng = np.random.default_rng(0)
    cuts = []
    for i, n in enumerate(samples):
        path = root / f"u{i}.wav"
        audio = rng.standard_normal(n) * np.sin(np.linspace(0, 20, n)) ** 2 * 0.1
        sf.write(path, audio.astype(np.float32), SR)
        rec = Recording.from_file(path, recording_id=f"u{i}")
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(f"u{i}", f"u{i}", 0.0, rec.duration, text="HELLO")]
        cuts.append(cut)
        if i in corrupt:
            path.write_bytes(b"not a wav" * 50)
    return CutSet.from_cuts(cuts)


def test_features_are_the_encoder_layer_with_lhotse_frame_counts(ckpt, tmp_path):
    ex = S.SslFeatureExtractor(ckpt, layer=1)
    assert (ex.num_layers, ex.feature_dim, ex.frame_shift) == (2, 64, 0.02)
    # 16000 samples: the encoder gives 49 frames, lhotse counts 50 -> last frame repeated;
    # 16080: both say 50.
    cuts = _cuts(tmp_path, [16000, 16080])
    model, _ = S.load_pretrained(ckpt)
    for cut, enc_frames in zip(cuts, (49, 50)):
        feats = ex.extract_cut(cut)
        want = compute_num_frames(cut.duration, 0.02, SR)
        assert feats.shape == (want, 64) and want == 50
        with torch.no_grad():
            ref = model.extract_features(torch.from_numpy(cut.load_audio()[0]).float()[None])[0][0][0]
        assert ref.shape[0] == enc_frames
        np.testing.assert_allclose(feats[:enc_frames], ref.numpy(), atol=1e-5)
        if enc_frames < want:
            np.testing.assert_array_equal(feats[-1], feats[-2])
    # layer 2 is another representation
    assert not np.allclose(S.SslFeatureExtractor(ckpt, layer=2).extract_cut(cuts[0]), ex.extract_cut(cuts[0]))


def test_bf16_is_close_to_fp32_but_not_equal(ckpt, tmp_path):
    cut = _cuts(tmp_path, [24000])[0]
    fp32 = S.SslFeatureExtractor(ckpt, 2).extract_cut(cut)
    bf16 = S.SslFeatureExtractor(ckpt, 2, bf16=True).extract_cut(cut)
    assert bf16.dtype == np.float32
    err = np.abs(bf16 - fp32)
    assert 0 < err.mean() < 0.05 * fp32.std() and err.max() < 0.5 * fp32.std()


def test_part_round_trip_bad_audio_skip_and_spec_guard(ckpt, tmp_path, caplog):
    cuts = _cuts(tmp_path, [16000, 20000, 12000], corrupt={1})
    in_path = tmp_path / "toy_cuts_test.jsonl.gz"
    cuts.to_file(in_path)
    out_dir = tmp_path / "ssl_L2"
    ex = S.SslFeatureExtractor(ckpt, 2)
    out = S.compute_ssl_features_for_part(in_path, out_dir, ex, progress=False)
    assert out == out_dir / in_path.name
    got = CutSet.from_file(out).to_eager()
    assert sorted(got.ids) == ["u0", "u2"]  # the garbled file is dropped ...
    assert "u1" in caplog.text and "u1.wav" in caplog.text  # ... and named
    for cut in got:
        assert cut.features.type == S.FEATURE_TYPE and cut.frame_shift == 0.02
        assert cut.num_features == 64 and cut.supervisions[0].text == "HELLO"
        np.testing.assert_array_equal(cut.load_features(), ex.extract_cut(cuts[cut.id]))
    spec = json.loads((out_dir / S.SPEC_FILE).read_text())
    assert (spec["layer"], spec["bf16"], spec["kind"], spec["feature_dim"]) == (2, False, "wav2vec2", 64)
    assert not list(out_dir.glob(".*tmp*"))
    # rerun: skipped, manifest untouched
    before = out.stat().st_mtime_ns
    assert S.compute_ssl_features_for_part(in_path, out_dir, ex, progress=False) is None
    assert out.stat().st_mtime_ns == before
    # other layer / precision into the same directory: refused, naming what differs
    with pytest.raises(RuntimeError, match="'layer': \\(2, 1\\)"):
        S.compute_ssl_features_for_part(in_path, out_dir, S.SslFeatureExtractor(ckpt, 1), progress=False)
    with pytest.raises(RuntimeError, match="'bf16': \\(False, True\\)"):
        S.compute_ssl_features_for_part(in_path, out_dir, S.SslFeatureExtractor(ckpt, 2, bf16=True),
                                        progress=False)


def test_lilcom_storage_is_close(ckpt, tmp_path):
    cuts = _cuts(tmp_path, [16000])
    ex = S.SslFeatureExtractor(ckpt, 2)
    got, failed = S.compute_ssl_features(cuts, ex, tmp_path / "feats", storage="lilcom", progress=False)
    assert not failed
    exact = ex.extract_cut(cuts[0])
    stored = got[0].load_features()
    assert stored.shape == exact.shape
    assert 0 < np.abs(stored - exact).max() < 0.05 * np.abs(exact).max()


def test_checkpoint_resolution_and_bad_layer(ckpt, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.json").write_text("{}")  # a pretraining exp dir has one too
    for step in (5, 30, 200):
        (exp / f"checkpoint-{step}.pt").write_bytes(ckpt.read_bytes())
    assert S.resolve_checkpoint(exp) == exp / "checkpoint-200.pt"  # numeric, not lexical order
    with pytest.raises(FileNotFoundError, match="No SSL checkpoint"):
        S.resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert S.resolve_checkpoint(tmp_path / "hf") == tmp_path / "hf"  # a Hugging Face model dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a Hugging Face"):
        S.resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(ValueError, match="layer 3 does not exist; .* has layers 1..2"):
        S.SslFeatureExtractor(exp, 3)


def test_killed_part_resumes_at_its_first_unfinished_chunk(ckpt, tmp_path, monkeypatch):
    cuts = _cuts(tmp_path, [8000, 9000, 10000, 11000, 12000])
    in_path = tmp_path / "toy_cuts_train.jsonl.gz"
    cuts.to_file(in_path)
    out_dir = tmp_path / "ssl"
    ex = S.SslFeatureExtractor(ckpt, 1)
    real, calls = ex.extract_cut, []

    def killed_at_fourth(cut):
        calls.append(cut.id)
        if len(calls) == 4:  # in the second chunk (cuts 3 and 4)
            raise KeyboardInterrupt
        return real(cut)

    monkeypatch.setattr(ex, "extract_cut", killed_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        S.compute_ssl_features_for_part(in_path, out_dir, ex, progress=False, chunk_size=2)
    assert not (out_dir / in_path.name).exists()
    calls.clear()
    monkeypatch.setattr(ex, "extract_cut", lambda cut: (calls.append(cut.id), real(cut))[1])
    S.compute_ssl_features_for_part(in_path, out_dir, ex, progress=False, chunk_size=2)
    assert calls == ["u2", "u3", "u4"]  # chunk 0 (u0, u1) was not redone
    got = CutSet.from_file(out_dir / in_path.name).to_eager()
    assert list(got.ids) == [f"u{i}" for i in range(5)]
    for cut in got:
        np.testing.assert_array_equal(cut.load_features(), real(cuts[cut.id]))
    assert not list(out_dir.glob(".*chunks"))  # the chunk manifests are gone


@pytest.mark.parametrize("family", ["wav2vec", "vq_wav2vec", "hubert"])
def test_other_families_and_their_frame_rates(family, tmp_path):
    """wav2vec 1.0 / vq-wav2vec: 10 ms frames, 3-4 fewer encoder frames than lhotse counts."""
    from w2v import models

    torch.manual_seed(0)
    model = getattr(models, f"{family}_tiny")().eval()
    path = tmp_path / f"{family}.pt"
    save_checkpoint(model, path)
    ex = S.SslFeatureExtractor(path, layer=1)
    shift = 0.02 if family == "hubert" else 0.01
    assert ex.frame_shift == shift and S.conv_geometry(model) == (
        (320, 400) if family == "hubert" else (160, 465))
    cut = _cuts(tmp_path, [16000])[0]
    feats = ex.extract_cut(cut)
    assert feats.shape[0] == compute_num_frames(cut.duration, shift, SR)
    with torch.no_grad():
        ref = model.extract_features(torch.from_numpy(cut.load_audio()[0]).float()[None], num_layers=1)[0][0][0]
    np.testing.assert_allclose(feats[: ref.shape[0]], ref.numpy(), atol=1e-5)
    np.testing.assert_array_equal(feats[ref.shape[0]:], np.repeat(feats[ref.shape[0] - 1: ref.shape[0]],
                                                                    feats.shape[0] - ref.shape[0], 0))
