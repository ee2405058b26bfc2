"""wenet data directories as a corpus, and manifests / tokens written in wenet's formats."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from w2v.bin import check_corpus, export_wenet as export_cli, prepare_corpus
from w2v.data.layout import LayoutError, MissingPartError, check_layout, part_inputs
from w2v.data.prepare import prepare_aishell
from w2v.data.wenet import (
    export_wenet,
    prepare_wenet,
    read_wenet_part,
    transcript,
    wenet_units,
    write_units,
)

PARTS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def aishell_reference(aishell_tiny, tmp_path_factory) -> dict:
    """part -> PartResult of the tiny AISHELL corpus prepared from its AISHELL-1 layout."""
    return prepare_aishell(aishell_tiny.parent, tmp_path_factory.mktemp("ref"), PARTS)


def _wenet_dir_like_wenet_prep(data_aishell: Path, out: Path, spaces: bool = True, relative: str = "") -> Path:
    """What wenet's ``local/aishell_data_prep.sh`` makes: per part, wav.scp of every wav and the
    transcript lines of those ids (``spaces=False``: with the spaces removed, as its run.sh does).
    ``relative``: the part whose wav.scp paths are written relative to its directory."""
    lines = (data_aishell / "transcript" / "aishell_transcript_v0.8.txt").read_text(encoding="utf-8").splitlines()
    trans = dict(line.split(" ", 1) for line in lines)
    for part in PARTS:
        d = out / part
        d.mkdir(parents=True)
        wavs = sorted((data_aishell / "wav" / part).rglob("*.wav"))
        where = (lambda w: os.path.relpath(w, d)) if part == relative else str
        (d / "wav.scp").write_text("".join(f"{w.stem} {where(w)}\n" for w in wavs))
        text = [(w.stem, trans[w.stem] if spaces else trans[w.stem].replace(" ", "")) for w in wavs]
        (d / "text").write_text("".join(f"{k} {t}\n" for k, t in text), encoding="utf-8")
    return out


def _as_dicts(result) -> tuple[dict, dict]:
    recs = {r.id: (r.sources[0].source, r.sampling_rate, r.num_samples, r.duration) for r in result.recordings}
    sups = {
        s.id: (s.recording_id, s.start, s.duration, s.text, s.speaker, s.language, s.custom.get("words"))
        for s in result.supervisions
    }
    return recs, sups


def test_wenet_dir_gives_the_aishell_manifests(aishell_tiny, aishell_reference, tmp_path):
    wenet = _wenet_dir_like_wenet_prep(aishell_tiny, tmp_path / "data", relative="dev")
    check_layout("aishell", wenet, PARTS)
    results = prepare_wenet(wenet, tmp_path / "m", PARTS)
    for part in PARTS:
        ref_recs, ref_sups = _as_dicts(aishell_reference[part])
        recs, sups = _as_dicts(results[part])
        assert len(recs) == len(ref_recs) > 5
        assert recs == {k: (str(Path(src).resolve()), *rest) for k, (src, *rest) in ref_recs.items()}
        assert sups == ref_sups
        assert (tmp_path / "m" / f"aishell_recordings_{part}.jsonl.gz").is_file()
        assert (tmp_path / "m" / f"rejected_aishell_{part}.txt").read_text() == ""


def test_text_without_spaces_has_characters_as_words(aishell_tiny, aishell_reference, tmp_path):
    wenet = _wenet_dir_like_wenet_prep(aishell_tiny, tmp_path / "data", spaces=False)
    got = prepare_wenet(wenet, tmp_path / "m", ["test"])["test"]
    ref = {s.id: s for s in aishell_reference["test"].supervisions}
    for s in got.supervisions:
        assert s.text == ref[s.id].text
        assert s.custom["words"] == " ".join(ref[s.id].text)  # every unit here is one CJK character
        assert s.duration == ref[s.id].duration


def test_transcript_normalises_as_aishell():
    assert transcript("我 买 ａｂ 电脑") == ("我 买 AB 电脑", "我买AB电脑")  # words normalised too
    assert transcript("  好的OK吗 ") == ("好 的 OK 吗", "好的OK吗")


def test_unsegmented_transcripts_split_as_the_char_lexicon():
    pytest.importorskip("k2")
    from w2v.lang.lexicon import split_chars

    for text in ("好的OK吗", "ABC", "你好", "3D打印机X", "A好B"):
        assert transcript(text)[0] == " ".join(split_chars(text))
    assert transcript("好的ｏｋ吗？") == ("好 的 OK 吗", "好的OK吗")


@pytest.mark.parametrize("words", [False, True])
def test_data_list_round_trip(aishell_reference, tmp_path, words):
    """manifests → export → only data.list (+ utt2spk) kept → read back: the same manifests."""
    out = tmp_path / "wenet"
    for part in PARTS:
        ref = aishell_reference[part]
        export_wenet(ref.recordings, ref.supervisions, out / part, words=words)
        rows = [json.loads(line) for line in (out / part / "data.list").read_text(encoding="utf-8").splitlines()]
        assert [r["key"] for r in rows] == sorted(s.id for s in ref.supervisions)
        assert all(Path(r["wav"]).is_absolute() and Path(r["wav"]).is_file() for r in rows)
        assert (" " in "".join(r["txt"] for r in rows)) == words
        for name in ("wav.scp", "text"):
            (out / part / name).unlink()
    back = prepare_wenet(out, tmp_path / "m", PARTS)
    for part in PARTS:
        ref_recs, ref_sups = _as_dicts(aishell_reference[part])
        recs, sups = _as_dicts(back[part])
        assert recs == {k: (str(Path(src).resolve()), *rest) for k, (src, *rest) in ref_recs.items()}
        if words:
            assert sups == ref_sups
        else:  # the text without spaces: words are its characters
            assert {k: v[:6] for k, v in sups.items()} == {k: v[:6] for k, v in ref_sups.items()}
            assert all(v[6] == " ".join(v[3]) for v in sups.values())


def test_export_cli_with_units(aishell_reference, tmp_path, capsys):
    m = tmp_path / "m"
    m.mkdir()
    for what in ("recordings", "supervisions"):
        getattr(aishell_reference["dev"], what).to_file(m / f"aishell_{what}_dev.jsonl.gz")
    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "tokens.txt").write_text("<blk> 0\n<sos/eos> 1\n<unk> 2\n一 3\n书 4\n#0 5\n#1 6\n")
    assert export_cli.main(["--manifest-dir", str(m), "--parts", "dev", "--out-dir", str(tmp_path / "w"),
                            "--lang-dir", str(lang)]) == 0
    assert (tmp_path / "w" / "units.txt").read_text() == "<blank> 0\n<unk> 1\n一 2\n书 3\n<sos/eos> 4\n"
    scp = (tmp_path / "w" / "dev" / "wav.scp").read_text().splitlines()
    assert len(scp) == len(aishell_reference["dev"].supervisions)
    assert export_cli.main(["--manifest-dir", str(m), "--parts", "test", "--out-dir", str(tmp_path / "w")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_units_mapping_from_our_tokens():
    ours = {"<blk>": 0, "<sos/eos>": 1, "<unk>": 2, "你": 3, "好": 4, "#A": 5, "#0": 6, "#1": 7}
    symbols, mapping = wenet_units(ours)
    assert symbols == ["<blank>", "<unk>", "你", "好", "#A", "<sos/eos>"]
    # <blk> 0 → 0, <unk> 2 → 1, unit i → i - 1, <sos/eos> 1 → last; #0, #1 (graphs only) dropped
    assert mapping == {0: 0, 2: 1, 3: 2, 4: 3, 5: 4, 1: 5}
    with pytest.raises(ValueError, match="'<blk>' must have id 0"):
        wenet_units({"<unk>": 0, "<blk>": 1})
    with pytest.raises(ValueError, match="no '<unk>'"):
        wenet_units({"<blk>": 0, "a": 1})


def test_units_of_a_real_char_lang_dir(tmp_path):
    pytest.importorskip("k2")
    from w2v.lang.lexicon import prepare_lang
    from w2v.lang.symbols import read_tokens

    (tmp_path / "transcript_words.txt").write_text("你好 世界\n你 好\n世界 好\n", encoding="utf-8")
    prepare_lang(tmp_path, token_type="char")
    tokens = read_tokens(tmp_path / "tokens.txt")
    mapping = write_units(tmp_path / "units.txt", tokens)
    units = [line.split() for line in (tmp_path / "units.txt").read_text(encoding="utf-8").splitlines()]
    assert units == [["<blank>", "0"], ["<unk>", "1"], ["世", "2"], ["你", "3"], ["好", "4"], ["界", "5"],
                     ["<sos/eos>", "6"]]
    # each of our ids maps onto the wenet id of the same symbol
    wenet = {s: int(i) for s, i in units}
    rename = {"<blk>": "<blank>"}
    assert all(wenet[rename.get(s, s)] == mapping[i] for s, i in tokens.items() if not s.startswith("#"))


@pytest.fixture
def damaged_wenet(aishell_tiny, tmp_path) -> tuple[Path, dict[str, str]]:
    """A wenet dir of the tiny corpus whose train part holds one of each kind of damage."""
    root = tmp_path / "data"
    _wenet_dir_like_wenet_prep(aishell_tiny, root)
    train = root / "train"
    wavs = sorted((aishell_tiny / "wav" / "train").rglob("*.wav"))
    bad = train / "bad"
    bad.mkdir()
    corrupt, stereo, low_sr = (bad / f"{w.stem}.wav" for w in wavs[:3])
    corrupt.write_bytes(b"RIFF but not a wav" * 20)
    sf.write(stereo, np.zeros((16000, 2), dtype=np.float32), 16000)
    sf.write(low_sr, np.zeros(8000, dtype=np.float32), 8000)
    scp = {k: v for k, v in (line.split(" ", 1) for line in (train / "wav.scp").read_text().splitlines())}
    scp.update({w.stem: f"bad/{w.name}" for w in (corrupt, stereo, low_sr)})
    ids = [w.stem for w in wavs]
    scp[ids[3]] = "/no/such/file.wav"
    scp[ids[4]] = f"sox {wavs[4]} -t wav - |"
    text = dict(line.split(" ", 1) for line in (train / "text").read_text(encoding="utf-8").splitlines())
    del text[ids[5]]
    text["BAC009S9999W0001"] = "没有 音频"
    lines = [f"{k} {v}".encode() for k, v in text.items() if k != ids[6]]
    lines.append(ids[6].encode() + b" caf\xe9")
    (train / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in scp.items()))
    (train / "text").write_bytes(b"\n".join(lines) + b"\n")
    damage = {
        ids[0]: "unreadable audio",
        ids[1]: "2 channels, expected 1 (mono)",
        ids[2]: "sample rate 8000 Hz, expected 16000 Hz",
        ids[3]: "no such audio file",
        ids[4]: "a command ('... |'), not an audio file",
        ids[5]: f"no transcript line in text for {ids[5]}",
        ids[6]: f"transcript of {ids[6]} is not UTF-8",
        "BAC009S9999W0001": "no wav.scp entry for BAC009S9999W0001",
    }
    return root, damage


def test_bad_entries_are_rejected_and_listed(damaged_wenet, aishell_reference, tmp_path):
    root, damage = damaged_wenet
    out = tmp_path / "m"
    results = prepare_wenet(root, out, ["train", "dev"])
    ref_ids = {r.id for r in aishell_reference["train"].recordings}
    assert {r.id for r in results["train"].recordings} == ref_ids - set(damage)
    report = (out / "rejected_aishell_train.txt").read_text(encoding="utf-8").splitlines()
    assert len(report) == len(damage)
    for uid, why in damage.items():
        (line,) = [r for r in report if uid in r]
        assert why in line, (uid, line)
    assert (out / "rejected_aishell_dev.txt").read_text() == ""


def test_missing_wav_scp_is_named(aishell_tiny, tmp_path, capsys):
    root = _wenet_dir_like_wenet_prep(aishell_tiny, tmp_path / "data")
    (root / "test" / "wav.scp").unlink()
    with pytest.raises(MissingPartError) as e:
        check_layout("aishell", root, PARTS)
    assert str(e.value) == (
        f"{root / 'test'} has no wav.scp (nor a data.list); it holds 1 entry: text; "
        f"{root} holds the parts: dev, train"
    )
    args = ["--corpus", "aishell", "--corpus-dir", str(root), "--parts", *PARTS]
    assert check_corpus.main(args) == 2
    assert capsys.readouterr().err == f"check_corpus: {e.value}\n"
    assert check_corpus.main([*args, "--missing-parts-ok", "true"]) == 0
    # prepared: the other parts first, then the missing file named; exit status 1 as for a missing part
    out = tmp_path / "m"
    assert prepare_corpus.main([*args, "--output-dir", str(out)]) == 1
    assert (out / "aishell_supervisions_dev.jsonl.gz").is_file()
    assert not (out / "aishell_supervisions_test.jsonl.gz").exists()
    shutil.rmtree(root / "dev")
    gone = rf"^missing part directories: {root / 'dev'}; {root / 'test'} has no wav.scp"
    with pytest.raises(MissingPartError, match=gone):
        check_layout("aishell", root, PARTS)


def test_wenet_layout_mistakes(aishell_tiny, tmp_path):
    root = _wenet_dir_like_wenet_prep(aishell_tiny, tmp_path / "data")
    with pytest.raises(LayoutError, match=rf"{root / 'train'} is one part of a wenet data directory .*: "
                                          rf"give --corpus-dir {root}, "):
        check_layout("aishell", root / "train", ["train"])
    (root / "dev" / "segments").write_text("u1 r1 0.0 1.0\n")
    with pytest.raises(MissingPartError, match="dev has a segments file: only one audio file per utterance"):
        check_layout("aishell", root, PARTS)
    only_text = tmp_path / "only_text"
    (only_text / "train").mkdir(parents=True)
    (only_text / "train" / "text").write_text("u 好\n", encoding="utf-8")
    incomplete = r"expected a wenet data directory .* found no complete part: .*train has no wav.scp"
    with pytest.raises(LayoutError, match=incomplete):
        check_layout("aishell", only_text, ["train"], missing_ok=True)


def test_part_inputs_for_the_stage_record(aishell_tiny, tmp_path, capsys):
    root = _wenet_dir_like_wenet_prep(aishell_tiny, tmp_path / "data")
    assert part_inputs("aishell", root, "dev") == [root / "dev" / "wav.scp", root / "dev" / "text"]
    assert part_inputs("aishell", aishell_tiny.parent, "dev") == [
        aishell_tiny / "wav" / "dev", aishell_tiny / "transcript" / "aishell_transcript_v0.8.txt"
    ]
    assert check_corpus.main(["--corpus", "aishell", "--corpus-dir", str(root), "--parts", "train", "test",
                              "--part-inputs", "true"]) == 0
    expected = [str(root / p / f) for p in ("train", "test") for f in ("wav.scp", "text")]
    assert capsys.readouterr().out.split() == expected


def test_read_part_relative_and_absolute_paths(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    (d / "wav.scp").write_text(f"b a/b.wav\na {tmp_path}/x/a.wav\nc ../c.wav\n")
    (d / "text").write_text("a 你好\nb 世界\nc 好\n", encoding="utf-8")
    (d / "utt2spk").write_text("a spk1\n")
    rejected: list = []
    utts = read_wenet_part(d, rejected)
    assert [(u.key, u.wav, u.speaker) for u in utts] == [
        ("a", tmp_path / "x" / "a.wav", "spk1"), ("b", d / "a" / "b.wav", None), ("c", tmp_path / "c.wav", None)
    ]
    assert rejected == []
