"""SSL feature extraction: values equal the encoder's layer, lhotse frame counts, bf16, storage,
bad audio, rerun skip and the guard against mixing feature sets; padded batches equal one cut at a
time; long recordings in windows; shards and their merge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.utils import compute_num_frames

from w2v.features import ssl as S
from w2v.features.parts import Shard
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
    # padded batches under autocast: as close
    cuts = _cuts(tmp_path, [24000, 20000, 16000])
    ex = S.SslFeatureExtractor(ckpt, 2, bf16=True)
    got, _ = S.compute_ssl_features(cuts, ex, tmp_path / "bf16", progress=False,
                                    limits=S.BatchLimits(seconds=10.0, padding=1.0))
    for c in got:
        ref = S.SslFeatureExtractor(ckpt, 2).extract_cut(cuts[c.id])
        err = np.abs(c.load_features() - ref)
        assert 0 < err.mean() < 0.05 * ref.std() and err.max() < 0.5 * ref.std()


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
        np.testing.assert_allclose(cut.load_features(), ex.extract_cut(cuts[cut.id]), atol=1e-5)
    spec = json.loads((out_dir / S.SPEC_FILE).read_text())
    assert (spec["layer"], spec["bf16"], spec["kind"], spec["feature_dim"]) == (2, False, "wav2vec2", 64)
    assert (spec["max_segment_seconds"], spec["context_seconds"]) == (30.0, 2.0)
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
    with pytest.raises(RuntimeError, match="'max_segment_seconds': \\(30.0, 0.0\\)"):
        S.compute_ssl_features_for_part(in_path, out_dir, S.SslFeatureExtractor(ckpt, 2, max_segment_seconds=0),
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
    real, calls = ex.extract_cuts, []

    def killed_at_fourth(batch, limits):
        calls.extend(c.id for c in batch)
        if len(calls) >= 4:  # in the second chunk (cuts 2 and 3)
            raise KeyboardInterrupt
        return real(batch, limits)

    monkeypatch.setattr(ex, "extract_cuts", killed_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        S.compute_ssl_features_for_part(in_path, out_dir, ex, progress=False, chunk_size=2, limits=S.ONE_AT_A_TIME)
    assert not (out_dir / in_path.name).exists()
    calls.clear()
    monkeypatch.setattr(ex, "extract_cuts", lambda batch, limits: (calls.extend(c.id for c in batch),
                                                                   real(batch, limits))[1])
    S.compute_ssl_features_for_part(in_path, out_dir, ex, progress=False, chunk_size=2, limits=S.ONE_AT_A_TIME)
    assert sorted(calls) == ["u2", "u3", "u4"]  # chunk 0 (u0, u1) was not redone
    monkeypatch.undo()
    got = CutSet.from_file(out_dir / in_path.name).to_eager()
    assert list(got.ids) == [f"u{i}" for i in range(5)]
    for cut in got:
        np.testing.assert_array_equal(cut.load_features(), ex.extract_cut(cuts[cut.id]))
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


def _checkpoint(tmp_path, factory: str, **overrides):
    from w2v import models

    torch.manual_seed(0)
    path = tmp_path / f"{factory}.pt"
    save_checkpoint(getattr(models, factory)(**overrides).eval(), path)
    return path


def _spy_batches(monkeypatch, ex):
    """Record the number of utterances of every encoder forward."""
    real, sizes = ex.encode, []

    def encode(audios, autocast=None):
        sizes.append(len(audios))
        return real(audios, autocast)

    monkeypatch.setattr(ex, "encode", encode)
    return sizes


@pytest.mark.parametrize("factory, overrides", [
    ("wav2vec2_tiny", {}),  # group-norm conv front end (BASE-style): normalised over valid frames only
    ("wav2vec2_tiny", {"conv_norm": "layer_norm"}),
    ("hubert_tiny", {}),
])
def test_padded_batches_equal_one_cut_at_a_time(factory, overrides, tmp_path, monkeypatch):
    path = _checkpoint(tmp_path, factory, **overrides)
    cuts = _cuts(tmp_path, [16000, 24000, 17000, 40000, 8000, 23000, 12345])
    ex = S.SslFeatureExtractor(path, layer=2)
    alone = {c.id: ex.extract_cut(c) for c in cuts}
    assert ex.pads_exactly
    sizes = _spy_batches(monkeypatch, ex)
    got, failed = S.compute_ssl_features(cuts, ex, tmp_path / "feats", progress=False,
                                         limits=S.BatchLimits(seconds=6.0, padding=1.0))
    assert not failed and list(got.ids) == list(cuts.ids)
    # longest first, padded to at most 6 s: 2.5 + 1.5 s, then 1.44 + 1.06 + 1.0 + 0.77 s, then 0.5 s
    assert sizes == [2, 4, 1]
    for cut in got:
        feats = cut.load_features()
        assert feats.shape[0] == compute_num_frames(cut.duration, 0.02, SR)
        np.testing.assert_allclose(feats, alone[cut.id], atol=1e-4, rtol=0)
        assert np.abs(feats - alone[cut.id]).max() < 1e-4


def test_batches_are_planned_longest_first_within_the_limits():
    lengths = [2.0, 10.0, 9.8, 3.0, 9.9, 1.0]
    assert S.plan_batches(lengths, S.BatchLimits(seconds=30.0)) == [[1, 4, 2], [3], [0], [5]]  # padding <= 5%
    assert S.plan_batches(lengths, S.BatchLimits(seconds=30.0, padding=1.0)) == [[1, 4, 2], [3, 0, 5]]
    assert S.plan_batches(lengths, S.BatchLimits(seconds=30.0, cuts=2, padding=1.0)) == [[1, 4], [2, 3], [0, 5]]
    assert S.plan_batches(lengths, S.BatchLimits(seconds=5.0, padding=1.0)) == [[1], [4], [2], [3], [0, 5]]
    assert S.plan_batches(lengths, S.ONE_AT_A_TIME) == [[1], [4], [2], [3], [0], [5]]


class _IgnoresLengths(torch.nn.Module):
    """An encoder that takes padding for audio: its group norm and attention pool over it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def extract_features(self, waveforms, lengths=None, num_layers=None):
        layers, _ = self.model.extract_features(waveforms, None, num_layers)
        windows = S.Windows(S.conv_layers(self.model), 0, 0)
        frames = None if lengths is None else torch.tensor([windows.num_frames(int(n)) for n in lengths])
        return layers, frames


def test_an_encoder_that_padding_changes_is_run_one_cut_at_a_time(ckpt, tmp_path, monkeypatch, caplog):
    real = S.load_pretrained
    monkeypatch.setattr(S, "load_pretrained", lambda p: (lambda m, c: (_IgnoresLengths(m), c))(*real(p)))
    ex = S.SslFeatureExtractor(ckpt, layer=2)
    cuts = _cuts(tmp_path, [16000, 24000, 17000])
    padded = ex.encode([torch.from_numpy(cuts[1].load_audio()[0]), torch.from_numpy(cuts[0].load_audio()[0])])
    assert np.abs(padded[1] - ex.extract_cut(cuts[0])[:49]).max() > 0.05  # what batching would give
    sizes = _spy_batches(monkeypatch, ex)
    got, _ = S.compute_ssl_features(cuts, ex, tmp_path / "feats", progress=False,
                                    limits=S.BatchLimits(seconds=100.0, padding=1.0))
    assert not ex.pads_exactly and "encoding one cut at a time" in caplog.text
    assert set(sizes[2:]) == {1}  # after the probe's own pair
    for cut in got:
        np.testing.assert_array_equal(cut.load_features(), ex.extract_cut(cuts[cut.id]))


def test_bad_audio_and_too_short_cuts_in_a_batch_are_dropped_alone(ckpt, tmp_path, caplog):
    cuts = _cuts(tmp_path, [16000, 20000, 300, 17000], corrupt={1})
    ex = S.SslFeatureExtractor(ckpt, 2)
    got, failed = S.compute_ssl_features(cuts, ex, tmp_path / "feats", progress=False,
                                         limits=S.BatchLimits(seconds=100.0, padding=1.0))
    assert list(got.ids) == ["u0", "u3"]
    assert {f.cut_id: f.error.split(":")[0] for f in failed} == {"u1": "AudioLoadingError", "u2": "ValueError"}
    assert "shorter than the receptive field (400 samples)" in caplog.text
    for cut in got:
        np.testing.assert_allclose(cut.load_features(), ex.extract_cut(cuts[cut.id]), atol=1e-5)


@pytest.mark.parametrize("layers", [S.conv_layers(wav2vec2_tiny()),
                                    ((32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2))])
def test_windows_tile_the_unsplit_frames_on_the_hop_grid(layers):
    hop, field = S._geometry(layers)
    w = S.Windows(layers, max_samples=30 * SR, context_frames=math.ceil(2 * SR / hop))
    for samples in (30 * SR, 30 * SR + 1, 31 * SR, 61 * SR + 123, 70 * SR, 200 * SR + 7):
        windows = w.split(samples)
        assert (len(windows) == 1) == (samples <= 30 * SR)
        frame = 0
        for start, end, keep_from, keep_to in windows:
            assert start % hop == 0 and end - start <= 30 * SR and end <= samples
            assert start // hop + keep_from == frame  # kept frames continue where the last window stopped
            n = w.num_frames(end - start)
            keep_to = n if keep_to is None else keep_to
            assert keep_to <= n
            if len(windows) > 1:  # context on both sides, except at the ends of the recording
                assert keep_from >= w.context_frames or start == 0
                assert n - keep_to >= w.context_frames or end == samples
            frame += keep_to - keep_from
        assert frame == w.num_frames(samples)
    with pytest.raises(ValueError, match="leaves no frame"):
        S.Windows.of(wav2vec2_tiny(), 4.0, 2.0)


class _ConvOnly(torch.nn.Module):
    """The conv front end's features as the one layer: every frame sees its receptive field only."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def extract_features(self, waveforms, lengths=None, num_layers=None):
        feats, frames = self.model.feature_extractor(waveforms, lengths)
        return [feats], frames


def _long_audio(seconds):
    rng = np.random.default_rng(1)
    n = int(seconds * SR)
    return (rng.standard_normal(n) * np.sin(np.linspace(0, 300, n)) ** 2 * 0.1).astype(np.float32)


def test_windows_of_a_local_encoder_give_the_unsplit_frames(tmp_path, monkeypatch):
    """Alignment: with a layer-norm conv front end as the encoder nothing crosses a window edge."""
    path = _checkpoint(tmp_path, "wav2vec2_tiny", conv_norm="layer_norm")
    real = S.load_pretrained
    monkeypatch.setattr(S, "load_pretrained", lambda p: (lambda m, c: (_ConvOnly(m), c))(*real(p)))
    audio = _long_audio(70)
    whole = S.SslFeatureExtractor(path, 1, max_segment_seconds=0).extract(audio)
    split = S.SslFeatureExtractor(path, 1, max_segment_seconds=30, context_seconds=2).extract(audio)
    assert whole.shape == split.shape == (3499, 64)
    np.testing.assert_allclose(split, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides, max_err, mean_err", [
    # attention reaches past the 2 s context; a random tiny model attends almost uniformly, so every
    # frame moves a little (measured: max 1.8e-3, mean 4.4e-4 of the features' std)
    ({"conv_norm": "layer_norm"}, 1e-2, 2e-3),
    # a group-norm front end normalises each window by its own statistics (measured: max 0.84,
    # mean 0.02): windows stay close on average only
    ({}, 1.5, 0.05),
])
def test_a_long_recording_in_windows_is_close_to_the_unsplit_one(overrides, max_err, mean_err, tmp_path):
    path = _checkpoint(tmp_path, "wav2vec2_tiny", **overrides)
    audio = _long_audio(70)
    whole = S.SslFeatureExtractor(path, 2, max_segment_seconds=0).extract(audio)
    ex = S.SslFeatureExtractor(path, 2)  # 30 s windows, 2 s context each side
    assert len(ex.windows.split(audio.size)) == 3
    split = ex.extract(audio)
    assert split.shape == whole.shape == (3499, 64)
    err = np.abs(split - whole) / whole.std()
    assert 0 < err.max() < max_err and err.mean() < mean_err


def _same_part(a, b):
    a, b = CutSet.from_file(a).to_eager(), CutSet.from_file(b).to_eager()
    assert list(a.ids) == list(b.ids)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.load_features(), y.load_features())


def test_two_shards_and_their_merge_equal_one_shard(ckpt, tmp_path):
    cuts = _cuts(tmp_path, [8000 + 1000 * i for i in range(7)], corrupt={4})
    in_path = tmp_path / "toy_cuts_train.jsonl.gz"
    cuts.to_file(in_path)
    ex = S.SslFeatureExtractor(ckpt, 2)
    one = S.compute_ssl_features_for_part(in_path, tmp_path / "one", ex, progress=False, chunk_size=2)
    two = tmp_path / "two"
    # 7 cuts in 4 chunks; shard 1 (chunks 1, 3) finishes first and leaves the merge to shard 0
    assert S.compute_ssl_features_for_part(in_path, two, ex, progress=False, chunk_size=2,
                                           shard=Shard(1, 2)) is None
    with pytest.raises(RuntimeError, match=r"unfinished shard 0/2 \(chunks 0, 2\)"):
        S.merge_ssl_part(in_path, two)
    # shard 0 in two worker processes' shares (chunk 0, chunk 2): each leaves the merge to its parent
    for worker in (0, 1):
        assert S.compute_ssl_features_for_part(in_path, two, ex, progress=False, chunk_size=2, shard=Shard(0, 2),
                                               worker=worker, num_workers=2) is None
    assert S.merge_ssl_part(in_path, two) == two / in_path.name
    _same_part(one, two / in_path.name)
    assert len(CutSet.from_file(one)) == 6  # the garbled u4 dropped
    assert not list(two.glob(".*")), "chunk directory or lock left behind"


def test_worker_processes_equal_one_process(ckpt, tmp_path):
    cuts = _cuts(tmp_path, [8000 + 1000 * i for i in range(5)])
    in_path = tmp_path / "toy_cuts_dev.jsonl.gz"
    cuts.to_file(in_path)
    options = S.ExtractorOptions(str(ckpt), 1)
    [one] = S.compute_ssl_features_for_parts([in_path], tmp_path / "one", options, progress=False, chunk_size=2)
    [two] = S.compute_ssl_features_for_parts([in_path], tmp_path / "two", options, num_jobs=2, progress=False,
                                             chunk_size=2)
    assert two == tmp_path / "two" / in_path.name
    _same_part(one, two)


def test_cli_shard_from_the_environment_and_merge_only(ckpt, tmp_path, monkeypatch):
    from w2v.bin import compute_ssl_features

    _cuts(tmp_path, [8000, 9000]).to_file(tmp_path / "toy_cuts_test.jsonl.gz")
    out_dir = tmp_path / "ssl"
    args = ["--checkpoint", str(ckpt), "--layer", "1", "--cuts", str(tmp_path / "toy_cuts_test.jsonl.gz"),
            "--out-dir", str(out_dir), "--device", "cpu", "--batch-duration", "10", "--max-padding", "0.5",
            "--max-segment-seconds", "20", "--context-seconds", "1"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    compute_ssl_features.main(args)  # shard 1/2: of the one chunk, nothing
    assert json.loads((out_dir / S.SPEC_FILE).read_text())["max_segment_seconds"] == 20.0
    with pytest.raises(RuntimeError, match=r"shard 0/2 \(chunks 0\)"):
        compute_ssl_features.main(["--merge-only", "true", "--cuts", str(tmp_path / "toy_cuts_test.jsonl.gz"),
                                   "--out-dir", str(out_dir)])
    compute_ssl_features.main(args + ["--shard", "0/2"])
    assert list(CutSet.from_file(out_dir / "toy_cuts_test.jsonl.gz").ids) == ["u0", "u1"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bf16", [False, True])
def test_batched_extraction_on_cuda_matches_the_cpu(bf16, tmp_path):
    """Padded batches on the GPU give the CPU's one-cut-at-a-time features (fp32 within 1e-3;
    bf16 within what bf16 moves the CPU features)."""
    path = _checkpoint(tmp_path, "wav2vec2_tiny")
    cuts = _cuts(tmp_path, [16000, 24000, 17000, 40000, 8000])
    cpu = S.SslFeatureExtractor(path, layer=2)
    gpu = S.SslFeatureExtractor(path, layer=2, bf16=bf16, device="cuda")
    alone = {c.id: cpu.extract_cut(c) for c in cuts}
    got, failed = S.compute_ssl_features(cuts, gpu, tmp_path / "feats", progress=False,
                                         limits=S.BatchLimits(seconds=6.0, padding=1.0))
    assert not failed and list(got.ids) == list(cuts.ids)
    for cut in got:
        np.testing.assert_allclose(cut.load_features(), alone[cut.id], atol=0.1 if bf16 else 1e-3, rtol=0)
