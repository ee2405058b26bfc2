import hashlib
import json
import random
import shutil

import pytest
import soundfile as sf
from lhotse.recipes import prepare_aishell as lhotse_prepare_aishell
from lhotse.recipes import prepare_librispeech as lhotse_prepare_librispeech

from w2v.data.synth import FINGERPRINT, CorpusExistsError, make_corpus, make_spec
from w2v.data.text import english_sentence, mandarin_sentence, vocabulary


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_librispeech_layout_read_by_lhotse(librispeech_tiny, tmp_path):
    manifests = lhotse_prepare_librispeech(librispeech_tiny, dataset_parts="auto", output_dir=tmp_path)
    assert set(manifests) == {"train-clean-100", "dev-clean", "test-clean"}
    spec = make_spec("librispeech", "tiny")
    for part, want_seconds in zip(("train-clean-100", "dev-clean", "test-clean"), spec.seconds):
        recs = manifests[part]["recordings"]
        sups = manifests[part]["supervisions"]
        assert len(recs) == len(sups) > 3
        assert {r.sampling_rate for r in recs} == {16000}
        assert {r.num_channels for r in recs} == {1}
        total = sum(r.duration for r in recs)
        # each speaker stops after crossing its share: at most one sentence (< 10 s) over per speaker
        assert want_seconds <= total < want_seconds + 10 * spec.speakers_per_part[0]
        for s in sups:
            assert s.text == s.text.upper() and s.text.strip()
            assert 0.5 < s.duration < 20
    # a file path in the exact layout <part>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac
    rec = next(iter(manifests["test-clean"]["recordings"]))
    spk, chapter, utt = rec.id.split("-")
    path = librispeech_tiny / "test-clean" / spk / chapter / f"{rec.id}.flac"
    assert path.is_file() and len(utt) == 4
    assert (librispeech_tiny / "test-clean" / spk / chapter / f"{spk}-{chapter}.trans.txt").is_file()
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_aishell_layout_read_by_lhotse(aishell_tiny, tmp_path):
    manifests = lhotse_prepare_aishell(aishell_tiny.parent, output_dir=tmp_path)
    transcript = (aishell_tiny / "transcript" / "aishell_transcript_v0.8.txt").read_text("utf-8").splitlines()
    by_id = dict(line.split(maxsplit=1) for line in transcript)
    for part in ("train", "dev", "test"):
        sups = manifests[part]["supervisions"]
        assert len(sups) > 3
        for s in sups:
            # lhotse drops the spaces; the transcript keeps the word segmentation
            assert by_id[s.id].replace(" ", "") == s.text
            assert " " in by_id[s.id] or len(by_id[s.id]) <= 4
            assert s.id.startswith("BAC009S") and s.speaker == f"S{s.id[7:11]}"
        recs = manifests[part]["recordings"]
        assert {r.sampling_rate for r in recs} == {16000}
        wav = next(iter(recs)).sources[0].source
        assert sf.info(wav).subtype == "PCM_16" and f"/wav/{part}/S" in wav


def test_deterministic_and_seed_dependent(tmp_path):
    spec = make_spec("librispeech", minutes=0.3, seed=7)
    a = make_corpus(tmp_path / "a", spec, progress=False)
    b = make_corpus(tmp_path / "b", spec, progress=False)
    c = make_corpus(tmp_path / "c", make_spec("librispeech", minutes=0.3, seed=8), progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_rerun_is_noop_and_never_overwrites(tmp_path):
    spec = make_spec("aishell", minutes=0.2, seed=1)
    root = make_corpus(tmp_path, spec, progress=False)
    before = _digest(root)
    assert make_corpus(tmp_path, spec, progress=False) == root  # same spec: nothing to do
    with pytest.raises(CorpusExistsError, match="refusing to overwrite"):
        make_corpus(tmp_path, make_spec("aishell", minutes=0.2, seed=2), progress=False)
    assert _digest(root) == before
    (root / FINGERPRINT).unlink()  # now it looks like someone else's corpus
    with pytest.raises(CorpusExistsError, match="not made by w2v-k2"):
        make_corpus(tmp_path, spec, progress=False)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_bad_options():
    with pytest.raises(ValueError, match="unknown --layout 'timit'"):
        make_spec("timit")
    with pytest.raises(ValueError, match="unknown --size"):
        make_spec("librispeech", size="huge")
    with pytest.raises(ValueError, match="positive"):
        make_spec("aishell", minutes=0)


def test_cli_reports_bad_layout(capsys):
    from w2v.bin.make_corpus import main

    assert main(["--layout", "wsj", "--out", "/nonexistent"]) == 2
    assert "unknown --layout 'wsj'" in capsys.readouterr().err


def test_text_generator_has_structure():
    r = random.Random(0)
    en = [english_sentence(r) for _ in range(2000)]
    zh = [mandarin_sentence(r) for _ in range(2000)]
    en_words = {w for s in en for w in s.split()}
    zh_words = {w for s in zh for w in s.split()}
    assert en_words <= vocabulary("english") and zh_words <= vocabulary("mandarin")
    assert len(en_words) > 250 and len(zh_words) > 120
    assert len(set(en)) > 1900  # rarely repeats a sentence
    lengths = [len(s.split()) for s in en]
    assert min(lengths) <= 3 and max(lengths) >= 15


def test_test_sentences_unseen_in_training(librispeech_tiny):
    def texts(part):
        return {
            line.split(maxsplit=1)[1]
            for t in (librispeech_tiny / part).rglob("*.trans.txt")
            for line in t.read_text().splitlines()
        }

    train, test = texts("train-clean-100"), texts("test-clean")
    assert test and not (test & train)
    fp = json.loads((librispeech_tiny / FINGERPRINT).read_text())
    assert fp["layout"] == "librispeech" and fp["seed"] == 0
