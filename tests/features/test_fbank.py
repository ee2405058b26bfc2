"""Fbank stage on synthetic audio: features, speed perturbation, bad files, skip, atomic output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from w2v.features import fbank as fb
from w2v.features.parts import Shard

SR = 16000


def _write_part(root, manifest_dir, part, durations, corrupt=()):
    """Write wavs + lhotse manifests for ``part``; files in ``corrupt`` are garbled afterwards."""
    rng = np.random.default_rng(0)
    recs, sups = [], []
    for i, dur in enumerate(durations):
        rid = f"{part}-utt{i}"
        path = root / f"{rid}.wav"
        t = np.arange(int(dur * SR)) / SR
        audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(path, audio.astype(np.float32), SR)
        rec = Recording.from_file(path, recording_id=rid)
        recs.append(rec)
        sups.append(SupervisionSegment(id=rid, recording_id=rid, start=0.0, duration=rec.duration,
                                       channel=0, text=f"WORD{i} HELLO"))
        if i in corrupt:
            path.write_bytes(b"this is not a wav file" * 10)
    rec_path, sup_path = fb.manifest_paths(manifest_dir, "toy", part)
    RecordingSet.from_recordings(recs).to_file(rec_path)
    SupervisionSet.from_segments(sups).to_file(sup_path)
    return recs


def test_fbank_part_values_perturbation_failures_and_skip(tmp_path, caplog):
    audio, manifests, out = tmp_path / "audio", tmp_path / "manifests", tmp_path / "fbank"
    audio.mkdir()
    manifests.mkdir()
    recs = _write_part(audio, manifests, "train-x", [1.0, 1.5, 0.8], corrupt={1})
    _write_part(audio, manifests, "dev-x", [1.2, 0.9])

    outs = fb.compute_fbank_for_parts(manifests, "toy", ["train-x", "dev-x"], out,
                                      speed_perturb=True, num_jobs=2)
    assert outs == [fb.cuts_path(out, "toy", p) for p in ("train-x", "dev-x")]

    train = CutSet.from_file(outs[0]).to_eager()
    # 3 utterances × (1.0, 0.9, 1.1) minus the 3 versions of the garbled one.
    assert sorted(train.ids) == sorted(
        f"train-x-utt{i}{sfx}" for i in (0, 2) for sfx in ("", "_sp0.9", "_sp1.1")
    )
    assert "train-x-utt1" in caplog.text and "train-x-utt1.wav" in caplog.text
    dev = CutSet.from_file(outs[1]).to_eager()
    assert sorted(dev.ids) == ["dev-x-utt0", "dev-x-utt1"]  # no perturbation outside train*

    cut = train["train-x-utt0"]
    feats = cut.load_features()
    assert feats.shape == (100, 80)  # 1 s at 10 ms shift (lhotse snip_edges=False)
    direct = fb.fbank_extractor().extract(recs[0].load_audio(), SR)
    # lilcom is lossy: compare within its quantisation error.
    assert np.abs(feats - direct).max() < 0.05
    slow = train["train-x-utt0_sp0.9"]
    assert slow.duration == pytest.approx(1.0 / 0.9, abs=0.01)
    assert slow.load_features().shape[0] == pytest.approx(111, abs=1)
    assert train["train-x-utt2"].supervisions[0].text == "WORD2 HELLO"

    # Existing output is skipped, not recomputed.
    mtime = outs[0].stat().st_mtime_ns
    assert fb.compute_fbank_for_part(manifests, "toy", "train-x", out, True, 1) is None
    assert outs[0].stat().st_mtime_ns == mtime
    assert not list(out.glob(".*tmp*")), "temporary manifest left behind"


def test_fbank_missing_manifest_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="toy_recordings_nope"):
        fb.compute_fbank_for_part(tmp_path, "toy", "nope", tmp_path / "out")


def test_compute_fbank_all_failed_raises(tmp_path):
    audio, manifests = tmp_path / "audio", tmp_path / "manifests"
    audio.mkdir()
    manifests.mkdir()
    _write_part(audio, manifests, "test-x", [0.5], corrupt={0})
    with pytest.raises(RuntimeError, match="no cut could be processed"):
        fb.compute_fbank_for_part(manifests, "toy", "test-x", tmp_path / "out")
    assert not fb.cuts_path(tmp_path / "out", "toy", "test-x").exists()


def test_two_shards_and_their_merge_equal_one_shard(tmp_path, caplog):
    audio, manifests = tmp_path / "audio", tmp_path / "manifests"
    audio.mkdir()
    manifests.mkdir()
    _write_part(audio, manifests, "train-x", [0.5, 0.7, 0.6, 0.9, 0.4], corrupt={3})
    one = fb.compute_fbank_for_part(manifests, "toy", "train-x", tmp_path / "one", speed_perturb=True,
                                    chunk_size=4)
    two = tmp_path / "two"
    # 15 cuts in 4 chunks: shard 1 has chunks 1 and 3, in 2 processes; then it waits for shard 0
    assert fb.compute_fbank_for_part(manifests, "toy", "train-x", two, True, num_jobs=2,
                                     shard=Shard(1, 2), chunk_size=4) is None
    with pytest.raises(RuntimeError, match=r"unfinished shard 0/2 \(chunks 0, 2\)"):
        fb.merge_fbank_part(two, "toy", "train-x")
    # the last shard to finish writes the manifest
    assert fb.compute_fbank_for_part(manifests, "toy", "train-x", two, True, shard=Shard(0, 2),
                                     chunk_size=4) == fb.cuts_path(two, "toy", "train-x")
    a = CutSet.from_file(one).to_eager()
    b = CutSet.from_file(fb.cuts_path(two, "toy", "train-x")).to_eager()
    assert list(a.ids) == list(b.ids) and len(a) == 12  # input order, the garbled file's 3 cuts dropped
    assert list(a.ids)[:4] == [f"train-x-utt{i}" for i in (0, 1, 2, 4)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.load_features(), y.load_features())
    assert {Path(c.features.storage_path).name for c in b} == {f"feats-{i:05d}.lca" for i in range(4)}
    assert not list(two.glob(".*")), "chunk directory or lock left behind"


def test_fbank_cli_shards_and_merge_only(tmp_path, monkeypatch):
    from w2v.bin import compute_fbank

    audio, manifests = tmp_path / "audio", tmp_path / "manifests"
    audio.mkdir()
    manifests.mkdir()
    _write_part(audio, manifests, "dev-x", [0.5] * 3)
    args = ["--manifest-dir", str(manifests), "--prefix", "toy", "--parts", "dev-x", "--out-dir", str(tmp_path / "f")]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    compute_fbank.main(args)  # shard 1/2 from the environment: of the one chunk, nothing
    with pytest.raises(RuntimeError, match=r"shard 0/2 \(chunks 0\)"):
        compute_fbank.main(args + ["--merge-only", "true"])
    compute_fbank.main(args + ["--shard", "0/2"])
    assert list(CutSet.from_file(fb.cuts_path(tmp_path / "f", "toy", "dev-x")).ids) == [
        f"dev-x-utt{i}" for i in range(3)]
