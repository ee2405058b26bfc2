import hashlib

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, RecordingSet

from w2v.bin.make_corpus import main as make_corpus_main
from w2v.bin.prepare_unlabeled import main as prepare_unlabeled_main
from w2v.data.synth import make_corpus, make_spec
from w2v.data.unlabeled import prepare_unlabeled, scan_audio, unlabeled_cuts

# sha256 (see _digest) of make_corpus(tmp, make_spec(layout, "tiny", seed=0)), computed before the
# unlabelled part existed: a corpus without it must stay byte-identical.
TINY_DIGESTS = {
    "librispeech": "3db87a55a16f3659e838308e7a484ba3cd80e04c025ceecf3da096eaf57813f9",
    "aishell": "7c2193c58c984e6fc1f7c7de754f5f6f1666f06b2125bc578baca7f44b69458b",
}


def _digest(root, skip=()):
    """sha256 over (relative path, content digest) of every file under ``root`` not under ``skip``."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _tone(path, seconds, rate=16000, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    sf.write(path, np.stack([wav] * channels, axis=1) if channels > 1 else wav, rate)


@pytest.fixture
def audio_dir(tmp_path):
    """Good: a/b/one.wav 1.0 s, a/two.flac 1.5 s, three.ogg 0.5 s. Bad: corrupt, 8 kHz, stereo."""
    root = tmp_path / "audio"
    _tone(root / "a" / "b" / "one.wav", 1.0)
    _tone(root / "a" / "two.flac", 1.5)
    _tone(root / "three.ogg", 0.5)
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    _tone(root / "slow.wav", 1.0, rate=8000)
    _tone(root / "stereo.flac", 1.0, channels=2)
    (root / "notes.txt").write_text("not audio")
    return root


def test_scan_keeps_good_files_and_rejects_bad(audio_dir):
    recs, rejected = scan_audio([audio_dir])
    assert {r.id: round(r.duration, 3) for r in recs} == {"a_b_one": 1.0, "a_two": 1.5, "three": 0.5}
    assert {r.sampling_rate for r in recs} == {16000}
    why = {p.split("/audio/")[1]: reason for p, reason in rejected}
    assert set(why) == {"bad/corrupt.wav", "slow.wav", "stereo.flac"}
    assert why["bad/corrupt.wav"].startswith("unreadable audio")
    assert why["slow.wav"] == "sample rate 8000 Hz, expected 16000 Hz"
    assert why["stereo.flac"] == "2 channels, expected 1 (mono)"


def test_resample_keeps_other_rates(audio_dir):
    recs, rejected = scan_audio([audio_dir], resample=True)
    slow = recs["slow"]
    assert slow.sampling_rate == 16000 and slow.num_samples == 16000
    assert slow.load_audio().shape == (1, 16000)
    assert [p.rsplit("/", 1)[1] for p, _ in rejected] == ["corrupt.wav", "stereo.flac"]  # mono still required


def test_two_dirs_with_same_names_do_not_collide(tmp_path):
    for d in ("x", "y"):
        _tone(tmp_path / d / "spk" / "utt.wav", 0.5)
    recs, rejected = scan_audio([tmp_path / "x", tmp_path / "y"])
    assert [r.id for r in recs] == ["0_spk_utt", "1_spk_utt"] and not rejected
    assert recs["1_spk_utt"].sources[0].source.endswith("y/spk/utt.wav")


def test_same_id_within_a_dir_is_rejected(tmp_path):
    _tone(tmp_path / "a" / "b.wav", 0.5)
    _tone(tmp_path / "a_b.flac", 0.5)
    recs, rejected = scan_audio([tmp_path])
    assert [r.sources[0].source for r in recs] == [str(tmp_path / "a" / "b.wav")]
    assert rejected == [(str(tmp_path / "a_b.flac"), f"recording id 'a_b' already taken by {tmp_path / 'a' / 'b.wav'}")]


def test_missing_empty_and_all_bad_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'} does not exist"):
        scan_audio([tmp_path / "nowhere"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=f"no audio file .* under {tmp_path / 'empty'}$"):
        scan_audio([tmp_path / "empty"])
    _tone(tmp_path / "bad" / "slow.wav", 0.5, rate=8000)
    with pytest.raises(ValueError, match="no usable audio file .* all 1 rejected"):
        scan_audio([tmp_path / "bad"])


def test_unlabeled_cuts_split_long_recordings(tmp_path):
    _tone(tmp_path / "long.wav", 2.5)
    _tone(tmp_path / "short.wav", 0.8)
    recs, _ = scan_audio([tmp_path])
    cuts = unlabeled_cuts(recs, max_seconds=1.0)
    # (id, first sample, samples): equal windows on whole samples, 40000 = 13333 + 13334 + 13333
    assert [(c.id, round(c.start * 16000), c.num_samples) for c in cuts] == [
        ("long-w0", 0, 13333), ("long-w1", 13333, 13334), ("long-w2", 26667, 13333), ("short", 0, 12800),
    ]
    assert all(not c.supervisions for c in cuts)
    whole = recs["long"].load_audio()[0]
    joined = np.concatenate([c.load_audio()[0] for c in cuts if c.recording_id == "long"])
    assert joined.shape == whole.shape and np.allclose(joined, whole, atol=1e-4)


def test_cli_writes_manifest_report_and_pretraining_cuts(audio_dir, tmp_path):
    from w2v.ssl.train import RawAudioDataset, load_cuts

    out = tmp_path / "manifests"
    cuts_path = out / "unlabeled_cuts.jsonl.gz"
    assert prepare_unlabeled_main(["--dirs", str(audio_dir), "--out-dir", str(out),
                                   "--resample", "true", "--cuts-out", str(cuts_path)]) == 0
    assert sorted(r.id for r in RecordingSet.from_file(out / "unlabeled_recordings.jsonl.gz")) == [
        "a_b_one", "a_two", "slow", "three"]
    lines = (out / "rejected_unlabeled.txt").read_text().splitlines()
    assert [line.split("\t")[0].rsplit("/", 1)[1] for line in lines] == ["corrupt.wav", "stereo.flac"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    # what w2v.bin.pretrain --cuts reads: the 8 kHz file arrives at 16 kHz
    cuts = load_cuts([str(cuts_path)], min_seconds=0.5)
    batch = RawAudioDataset(crop_seconds=None)[CutSet.from_cuts(c for c in cuts if c.id == "slow")]
    assert batch["lengths"].tolist() == [16000]
    assert prepare_unlabeled_main(["--dirs", str(tmp_path / "nowhere"), "--out-dir", str(out)]) == 2


def test_prepare_unlabeled_returns_manifest(audio_dir, tmp_path):
    manifest = prepare_unlabeled([audio_dir], tmp_path / "m")
    assert manifest == tmp_path / "m" / "unlabeled_recordings.jsonl.gz"
    assert len(RecordingSet.from_file(manifest)) == 3
    assert len((tmp_path / "m" / "rejected_unlabeled.txt").read_text().splitlines()) == 3


# ---------------------------------------------------------------------------------------------
# the synthetic corpus's unlabelled part


@pytest.mark.parametrize("layout", ["librispeech", "aishell"])
def test_synthetic_corpus_without_unlabeled_part_unchanged(tmp_path, layout):
    root = make_corpus(tmp_path, make_spec(layout, "tiny", seed=0, unlabeled_minutes=0), progress=False)
    assert _digest(root) == TINY_DIGESTS[layout]


def _speakers(part_dir):
    """Speaker directory names: <part>/<spk>/... in both layouts."""
    return {p.relative_to(part_dir).parts[0] for p in part_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("layout", ["librispeech", "aishell"])
def test_synthetic_unlabeled_part(tmp_path, layout):
    spec = make_spec(layout, "tiny", seed=0, unlabeled_minutes=1)
    root = make_corpus(tmp_path, spec, progress=False)
    parts = {"librispeech": ("train-clean-100", "dev-clean", "test-clean"), "aishell": ("train", "dev", "test")}[layout]
    base = root if layout == "librispeech" else root / "wav"
    unlabeled = base / "unlabeled"
    files = [p for p in unlabeled.rglob("*") if p.is_file()]
    ext = ".flac" if layout == "librispeech" else ".wav"
    assert files and {p.suffix for p in files} == {ext}  # audio only: no .trans.txt
    if layout == "aishell":
        transcript = (root / "transcript" / "aishell_transcript_v0.8.txt").read_text("utf-8")
        assert not any(p.stem in transcript for p in files)
        assert all(p.parent.name == p.stem[6:11] for p in files)  # wav/unlabeled/S1000/BAC009S1000W0121.wav
    else:
        assert all(p.stem.startswith(f"{p.parent.parent.name}-{p.parent.name}-") for p in files)
    new = _speakers(unlabeled)
    labelled = [_speakers(base / part) for part in parts]
    assert len(new) == spec.unlabeled_speakers and not new & set().union(*labelled)
    minutes = sum(sf.info(str(p)).duration for p in files) / 60
    assert 1.0 <= minutes < 1.03
    train_minutes = spec.seconds[0] / 60
    assert len(new) / minutes > 1.5 * len(labelled[0]) / train_minutes
    # the labelled parts are the same as without the unlabelled one (own random streams)
    skip = ("unlabeled", "wav/unlabeled", "SPEAKERS.TXT", "speakers.txt", ".w2v-synth.json")
    plain = make_corpus(tmp_path / "plain", make_spec(layout, "tiny", seed=0), progress=False)
    assert _digest(root, skip) == _digest(plain, skip)
    # the labelled corpus gets the part added, as if made at once, also over an interrupted
    # addition (a part directory without the fingerprint that lists it)
    stale = (plain if layout == "librispeech" else plain / "wav") / "unlabeled" / "junk"
    stale.mkdir(parents=True)
    (stale / "half.flac").write_bytes(b"")
    assert make_corpus(tmp_path / "plain", spec, progress=False) == plain
    assert _digest(plain) == _digest(root)
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "plain").iterdir())
    # and the part prepares as unlabelled audio, every file kept
    recs, rejected = scan_audio([unlabeled])
    assert len(recs) == len(files) and not rejected


def test_make_corpus_cli_unlabeled_minutes(tmp_path, capsys):
    assert make_corpus_main(["--layout", "librispeech", "--out", str(tmp_path), "--unlabeled-minutes", "-1"]) == 2
    assert "--unlabeled-minutes must be 0 or more" in capsys.readouterr().err
    spec = make_spec("librispeech", "tiny", unlabeled_minutes=0.25)
    assert (spec.unlabeled_seconds, spec.unlabeled_speakers) == (15.0, 2)
