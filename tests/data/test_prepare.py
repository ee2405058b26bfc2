import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from w2v.data.prepare import MissingPartError, check_audio, prepare_aishell, prepare_librispeech


@pytest.fixture
def damaged_librispeech(librispeech_tiny, tmp_path):
    """A copy of the tiny corpus with one of each kind of damage in train-clean-100."""
    root = tmp_path / "LibriSpeech"
    shutil.copytree(librispeech_tiny, root)
    flacs = sorted((root / "train-clean-100").rglob("*.flac"))
    damage = {}
    corrupt, trunc, low_sr, stereo = flacs[0], flacs[1], flacs[2], flacs[3]
    corrupt.write_bytes(b"not a flac file at all" * 50)
    damage[corrupt.stem] = "unreadable audio"
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    damage[trunc.stem] = "truncated"
    sf.write(low_sr, np.zeros(8000, dtype=np.float32), 8000)
    damage[low_sr.stem] = "sample rate 8000 Hz, expected 16000 Hz"
    sf.write(stereo, np.zeros((16000, 2), dtype=np.float32), 16000)
    damage[stereo.stem] = "2 channels, expected 1"
    # an empty transcript line and a non-UTF-8 line, in the transcript of flacs[4] / flacs[5]
    for flac, new in ((flacs[4], lambda uid: uid.encode()), (flacs[5], lambda uid: uid.encode() + b" CAF\xe9 NOIR")):
        trans = flac.parent / f"{'-'.join(flac.stem.split('-')[:2])}.trans.txt"
        lines = trans.read_bytes().splitlines()
        lines = [new(flac.stem) if line.split(b" ", 1)[0] == flac.stem.encode() else line for line in lines]
        trans.write_bytes(b"\n".join(lines) + b"\n")
    damage[flacs[4].stem] = "empty transcript"
    damage[flacs[5].stem] = "not UTF-8"
    return root, damage, len(flacs)


def test_bad_files_are_reported_and_the_rest_kept(damaged_librispeech, tmp_path):
    root, damage, n_flacs = damaged_librispeech
    out = tmp_path / "manifests"
    results = prepare_librispeech(root, out, ["train-clean-100", "test-clean"])
    train = results["train-clean-100"]
    assert len(train.recordings) == n_flacs - len(damage)
    ids = {r.id for r in train.recordings}
    assert not ids & set(damage)
    report = (out / "rejected_librispeech_train-clean-100.txt").read_text().splitlines()
    assert len(report) == len(damage)
    for uid, why in damage.items():
        (line,) = [r for r in report if uid in r or (why in r and "trans.txt" in r and why in ("empty transcript", "not UTF-8"))][:1]
        assert why in line, (uid, line)
    assert (out / "librispeech_recordings_test-clean.jsonl.gz").is_file()
    assert (out / "rejected_librispeech_test-clean.txt").read_text() == ""


def test_missing_part_named_after_others_are_written(librispeech_tiny, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(MissingPartError, match="test-other"):
        prepare_librispeech(librispeech_tiny, out, ["test-other", "dev-clean"])
    assert (out / "librispeech_supervisions_dev-clean.jsonl.gz").is_file()
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        prepare_librispeech(tmp_path / "no-such-dir", out)
    with pytest.raises(ValueError, match="unknown librispeech part"):
        prepare_librispeech(librispeech_tiny, out, ["test-klean"])


def test_rerun_skips_prepared_parts_and_leaves_no_partials(librispeech_tiny, tmp_path):
    out = tmp_path / "m"
    first = prepare_librispeech(librispeech_tiny, out, ["dev-clean"])
    assert not first["dev-clean"].cached
    mtime = (out / "librispeech_recordings_dev-clean.jsonl.gz").stat().st_mtime_ns
    again = prepare_librispeech(librispeech_tiny, out, ["dev-clean"])
    assert again["dev-clean"].cached
    assert len(again["dev-clean"].supervisions) == len(first["dev-clean"].supervisions)
    assert (out / "librispeech_recordings_dev-clean.jsonl.gz").stat().st_mtime_ns == mtime
    assert not [p for p in out.iterdir() if "partial" in p.name]


def test_aishell_keeps_word_segmentation(aishell_tiny, tmp_path):
    results = prepare_aishell(aishell_tiny.parent, tmp_path, ["test"])
    sups = results["test"].supervisions
    for s in sups:
        assert s.custom["words"].replace(" ", "") == s.text
    assert any(" " in s.custom["words"] for s in sups)


def test_check_audio_accepts_good_file(librispeech_tiny):
    flac = next((librispeech_tiny / "dev-clean").rglob("*.flac"))
    assert check_audio(flac) is None
    assert "sample rate 16000 Hz, expected 8000 Hz" == check_audio(flac, sample_rate=8000)


def _part_with_rates(root, corpus: str, files: list[tuple[int, int, int]]):
    """A one-part corpus, LibriSpeech ``dev-clean`` or AISHELL ``dev``; files = (rate, frames, channels).

    Returns (corpus_dir, part, {utt_id: (rate, frames, channels)}).
    """
    rng = np.random.default_rng(0)
    utts = {}
    lines = []
    for i, (rate, frames, channels) in enumerate(files):
        if corpus == "librispeech":
            uid = f"84-121123-{i:04d}"
            path = root / "dev-clean" / "84" / "121123" / f"{uid}.flac"
        else:
            uid = f"BAC009S0724W{i:04d}"
            path = root / "data_aishell" / "wav" / "dev" / "S0724" / f"{uid}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = (0.1 * rng.standard_normal((frames, channels))).astype(np.float32)
        sf.write(path, audio[:, 0] if channels == 1 else audio, rate, subtype="PCM_16")
        lines.append(f"{uid} {'HELLO WORLD' if corpus == 'librispeech' else '你好 世界'}\n")
        utts[uid] = (rate, frames, channels)
    if corpus == "librispeech":
        (root / "dev-clean" / "84" / "121123" / "84-121123.trans.txt").write_text("".join(lines))
        return root, "dev-clean", utts
    transcript = root / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("".join(lines), encoding="utf-8")
    return root, "dev", utts


# 16 kHz files, one 8 kHz, one 22.05 kHz (a length that is no whole number of 16 kHz samples), one
# stereo 16 kHz file (rejected with or without resampling: it is not downmixed).
MIXED_RATES = [(16000, 16000, 1), (8000, 10400, 1), (16000, 20000, 1), (22050, 24257, 1), (16000, 17000, 2)]


@pytest.mark.parametrize("corpus", ["librispeech", "aishell"])
def test_other_sample_rates_rejected_by_default(corpus, tmp_path, caplog):
    corpus_dir, part, utts = _part_with_rates(tmp_path / "c", corpus, MIXED_RATES)
    prepare = prepare_librispeech if corpus == "librispeech" else prepare_aishell
    with caplog.at_level("INFO"):
        results = prepare(corpus_dir, tmp_path / "m", [part])
    kept = {r.id for r in results[part].recordings}
    assert kept == {u for u, (rate, _, ch) in utts.items() if rate == 16000 and ch == 1}
    report_lines = (tmp_path / "m" / f"rejected_{corpus}_{part}.txt").read_text().splitlines()
    report = dict(line.split("\t") for line in report_lines)
    reasons = {Path(p).stem: why for p, why in report.items()}
    ids = list(utts)
    assert reasons == {
        ids[1]: "sample rate 8000 Hz, expected 16000 Hz",
        ids[3]: "sample rate 22050 Hz, expected 16000 Hz",
        ids[4]: "2 channels, expected 1 (mono)",
    }
    assert f"{part}: 2 of them for their sample rate; --resample true keeps them" in caplog.text
    assert results[part].resampled == {}


@pytest.mark.parametrize("corpus", ["librispeech", "aishell"])
def test_resample_keeps_other_rates_at_16k(corpus, tmp_path, caplog):
    corpus_dir, part, utts = _part_with_rates(tmp_path / "c", corpus, MIXED_RATES)
    prepare = prepare_librispeech if corpus == "librispeech" else prepare_aishell
    out = tmp_path / "m"
    with caplog.at_level("INFO"):
        results = prepare(corpus_dir, out, [part], resample=True)
    ids = list(utts)
    assert f"{part}: resampled 1 file from 8000 Hz, 1 from 22050 Hz (to 16000 Hz, on load)" in caplog.text
    assert results[part].resampled == {8000: 1, 22050: 1}
    report = (out / f"rejected_{corpus}_{part}.txt").read_text()
    assert report == f"{next(Path(corpus_dir).rglob(ids[4] + '.*'))}\t2 channels, expected 1 (mono)\n"
    # the manifests as written, read back (the resampling is part of the recording manifest)
    again = prepare(corpus_dir, out, [part], resample=True)[part]
    assert again.cached
    sups = {s.recording_id: s for s in again.supervisions}
    assert {r.id for r in again.recordings} == set(ids[:4])
    for rec in again.recordings:
        rate, frames, _ = utts[rec.id]
        duration = frames / rate
        assert rec.sampling_rate == 16000
        samples = rec.load_audio()
        assert samples.shape[0] == 1
        assert abs(samples.shape[1] - duration * 16000) <= 1, (rec.id, samples.shape, duration)
        assert abs(rec.num_samples - samples.shape[1]) <= 1
        assert sups[rec.id].duration <= rec.duration + 1e-9
        assert abs(sups[rec.id].duration - duration) < 1e-3


def test_aishell_transcripts_are_normalised(tmp_path):
    """Full-width letters, punctuation and case become the one Mandarin normal form (w2v.data.text)."""
    corpus_dir, part, utts = _part_with_rates(tmp_path / "c", "aishell", [(16000, 16000, 1)] * 4)
    uids = sorted(utts)
    raw = ["我 喜欢 去 ｋｔｖ 唱歌。", "HELLO world，你好！", "卡拉OK  很 好玩", "，。！"]
    transcript = corpus_dir / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.write_text("".join(f"{u} {t}\n" for u, t in zip(uids, raw)), encoding="utf-8")
    result = prepare_aishell(corpus_dir, tmp_path / "m", [part])[part]
    sups = {s.id: s for s in result.supervisions}
    assert [(sups[u].custom["words"], sups[u].text) for u in uids[:3]] == [
        ("我 喜欢 去 KTV 唱歌", "我喜欢去KTV唱歌"),
        ("HELLO WORLD 你好", "HELLO WORLD你好"),
        ("卡拉OK 很 好玩", "卡拉OK很好玩"),
    ]
    assert uids[3] not in sups
    assert [why for path, why in result.rejected if uids[3] in path] == [
        f"empty transcript for {uids[3]} after normalisation (was '，。！') ({transcript})"]
