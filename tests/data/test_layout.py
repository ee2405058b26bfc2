"""Wrong corpus layouts: one message naming the layout expected and what was found."""

import subprocess
import sys
from pathlib import Path

import pytest

from w2v.bin import check_corpus
from w2v.data.layout import (
    LayoutError,
    MissingPartError,
    UnknownPartError,
    check_layout,
    check_part_names,
)
from w2v.data.prepare import prepare_aishell, prepare_librispeech

LS_EXPECTED = (
    "expected the LibriSpeech layout (<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + .flac)"
)
AI_EXPECTED = (
    "expected the AISHELL-1 layout (data_aishell/wav/<part>/<speaker>/<utt>.wav + "
    "data_aishell/transcript/aishell_transcript_v0.8.txt)"
)


def _touch(root: Path, *paths: str) -> Path:
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).touch()
    return root


def _librispeech_tree(root: Path, parts=("dev-clean", "test-clean")) -> Path:
    for part in parts:
        _touch(root, f"{part}/84/121123/84-121123.trans.txt", f"{part}/84/121123/84-121123-0000.flac")
    return _touch(root, "SPEAKERS.TXT")


def _aishell_tree(root: Path, parts=("train", "dev", "test")) -> Path:
    """``root`` holds data_aishell/ (``root`` is the AISHELL corpus dir)."""
    for part in parts:
        _touch(root, f"data_aishell/wav/{part}/S0002/BAC009S0002W0122.wav")
    return _touch(root, "data_aishell/transcript/aishell_transcript_v0.8.txt")


def _message(corpus, corpus_dir, parts, error=LayoutError) -> str:
    with pytest.raises(error) as e:
        check_layout(corpus, corpus_dir, parts)
    return str(e.value)


def test_good_layouts_pass(tmp_path):
    check_layout("librispeech", _librispeech_tree(tmp_path / "LibriSpeech"), ["dev-clean", "test-clean"])
    check_layout("aishell", _aishell_tree(tmp_path / "aishell"), ["train", "dev", "test"])


def test_librispeech_given_its_parent(tmp_path):
    _librispeech_tree(tmp_path / "LibriSpeech")
    assert _message("librispeech", tmp_path, ["dev-clean"]) == (
        f"{tmp_path} holds LibriSpeech/: give --corpus-dir {tmp_path / 'LibriSpeech'}"
    )


def test_librispeech_given_a_part_directory(tmp_path):
    root = _librispeech_tree(tmp_path / "LibriSpeech")
    assert _message("librispeech", root / "dev-clean", ["dev-clean"]) == (
        f"{root / 'dev-clean'} is the LibriSpeech part 'dev-clean', not the corpus: give --corpus-dir {root}"
    )


@pytest.mark.parametrize("given", [".", "data_aishell", "aishell_download"])
def test_librispeech_given_aishell(tmp_path, given):
    root = _aishell_tree(tmp_path / "corpus")
    if given == "aishell_download":  # lhotse's download_aishell(target) → target/aishell/data_aishell
        (tmp_path / "target").mkdir()
        (tmp_path / "target" / "aishell").symlink_to(root)
        corpus_dir, found = tmp_path / "target", f" at {tmp_path / 'target/aishell/data_aishell'}"
    elif given == "data_aishell":
        corpus_dir, found = root / "data_aishell", ""
    else:
        corpus_dir, found = root, f" at {root / 'data_aishell'}"
    assert _message("librispeech", corpus_dir, ["dev-clean"]) == (
        f"{LS_EXPECTED} in {corpus_dir}, found the AISHELL-1 layout (data_aishell/wav, data_aishell/transcript){found}"
    )


def test_aishell_given_data_aishell_itself_or_a_dir_inside(tmp_path):
    root = _aishell_tree(tmp_path)
    assert _message("aishell", root / "data_aishell", ["train"]) == (
        f"{root / 'data_aishell'} is the data_aishell directory itself: give --corpus-dir {root} "
        "(the directory that holds data_aishell/)"
    )
    inside = root / "data_aishell" / "wav" / "train"
    assert _message("aishell", inside, ["train"]) == (
        f"{inside} is inside the data_aishell directory {root / 'data_aishell'}: give --corpus-dir {root}"
    )


def test_aishell_given_lhotse_download_dir(tmp_path):
    _aishell_tree(tmp_path / "download" / "aishell")
    target = tmp_path / "download"
    assert _message("aishell", target, ["train"]) == (
        f"{target} holds aishell/data_aishell (lhotse's download location): give --corpus-dir {target / 'aishell'}"
    )
    check_layout("aishell", target / "aishell", ["train"])


def test_aishell_given_librispeech(tmp_path):
    root = _librispeech_tree(tmp_path / "LibriSpeech")
    found = f"found the LibriSpeech layout at {root} (parts: dev-clean, test-clean)"
    assert _message("aishell", root, ["train"]) == f"{AI_EXPECTED} in {root}, {found}"
    assert _message("aishell", tmp_path, ["train"]) == f"{AI_EXPECTED} in {tmp_path}, {found}"


def test_aishell_without_transcript_or_with_unextracted_archives(tmp_path):
    root = _touch(tmp_path / "a", "data_aishell/wav/train/S0002/x.wav")
    assert _message("aishell", root, ["train"]) == (
        f"{AI_EXPECTED} in {root}, found no transcript {root / 'data_aishell/transcript/aishell_transcript_v0.8.txt'} "
        f"({root / 'data_aishell/transcript'}: no such directory)"
    )
    # data_aishell.tgz unpacked, but not the per-speaker archives inside wav/
    root = _touch(tmp_path / "b", "data_aishell/transcript/aishell_transcript_v0.8.txt",
                  "data_aishell/wav/S0002.tar.gz", "data_aishell/wav/S0003.tar.gz")
    assert _message("aishell", root, ["train"]) == (
        f"{root / 'data_aishell/wav'} holds 2 archive(s) (S0002.tar.gz, S0003.tar.gz) and no part directory: "
        f"extract them in {root / 'data_aishell/wav'} first (each holds <part>/<speaker>/*.wav)"
    )


def test_neither_layout_says_what_is_there(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _message("librispeech", empty, ["dev-clean"]) == f"{LS_EXPECTED} in {empty}, found an empty directory"
    assert _message("aishell", empty, ["train"]) == f"{AI_EXPECTED} in {empty}, found an empty directory"
    flacs = _touch(tmp_path / "flacs", *[f"{i:02d}.flac" for i in range(11)], "sub/x.flac", ".hidden")
    assert _message("librispeech", flacs, ["dev-clean"]) == (
        f"{LS_EXPECTED} in {flacs}, found 12 entries: "
        "00.flac, 01.flac, 02.flac, 03.flac, 04.flac, 05.flac, 06.flac, 07.flac, … (4 more)"
    )
    tars = _touch(tmp_path / "tars", "dev-clean.tar.gz")
    assert _message("librispeech", tars, ["dev-clean"]) == (
        f"{LS_EXPECTED} in {tars}, found 1 entry: dev-clean.tar.gz (archives not extracted?)"
    )


def test_missing_and_unknown_parts(tmp_path):
    root = _librispeech_tree(tmp_path / "LibriSpeech")
    assert _message("librispeech", root, ["dev-clean", "test-other"], MissingPartError) == (
        f"missing part directories: {root / 'test-other'}; {root} holds the parts: dev-clean, test-clean"
    )
    check_layout("librispeech", root, ["dev-clean", "test-other"], missing_ok=True)
    ai = _aishell_tree(tmp_path / "ai", parts=("train",))
    assert _message("aishell", ai, ["train", "test"], MissingPartError) == (
        f"missing part directories: {ai / 'data_aishell/wav/test'}; {ai / 'data_aishell/wav'} holds the parts: train"
    )
    with pytest.raises(UnknownPartError) as e:
        check_part_names("librispeech", ["dev-clean", "test-klean"])
    assert str(e.value).startswith(
        "unknown librispeech part(s) ['test-klean'] (did you mean 'test-klean' → 'test-clean'?); "
        "expected some of ['train-clean-100',"
    )
    # names are checked before the directory is looked at
    with pytest.raises(UnknownPartError, match=r"\['devv'\]"):
        check_layout("aishell", tmp_path / "nowhere", ["devv"])
    with pytest.raises(FileNotFoundError, match="corpus directory .*nowhere does not exist"):
        check_layout("aishell", tmp_path / "nowhere", ["dev"])


def test_prepare_checks_the_layout_first_and_writes_nothing(aishell_tiny, librispeech_tiny, tmp_path):
    out = tmp_path / "m"
    # (both tiny corpora share one parent, which therefore reads as the parent of LibriSpeech/)
    with pytest.raises(LayoutError, match="found the AISHELL-1 layout"):
        prepare_librispeech(aishell_tiny, out, ["dev-clean"])
    with pytest.raises(LayoutError, match=f"give --corpus-dir {librispeech_tiny}$"):
        prepare_librispeech(librispeech_tiny.parent, out, ["dev-clean"])
    with pytest.raises(LayoutError, match=f"give --corpus-dir {aishell_tiny.parent} "):
        prepare_aishell(aishell_tiny, out, ["dev"])
    assert not out.exists()


def test_prepare_missing_part_lists_present_parts_and_writes_the_others(librispeech_tiny, tmp_path):
    out = tmp_path / "m"
    with pytest.raises(MissingPartError) as e:
        prepare_librispeech(librispeech_tiny, out, ["test-other", "dev-clean"])
    assert str(e.value) == (
        f"missing part directories: {librispeech_tiny / 'test-other'} (the other parts were prepared); "
        f"{librispeech_tiny} holds the parts: train-clean-100, dev-clean, test-clean"
    )
    assert (out / "librispeech_recordings_dev-clean.jsonl.gz").is_file()
    assert (out / "librispeech_supervisions_dev-clean.jsonl.gz").is_file()


def test_check_corpus_cli(tmp_path, capsys):
    root = _librispeech_tree(tmp_path / "LibriSpeech")
    assert check_corpus.main(["--corpus", "librispeech", "--parts", "dev-clean", "--corpus-dir", str(root)]) == 0
    assert capsys.readouterr() == ("", "")
    assert check_corpus.main(["--corpus", "librispeech", "--parts", "dev-clean", "--corpus-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"check_corpus: {tmp_path} holds LibriSpeech/: give --corpus-dir {root}\n"
    # names only, without --corpus-dir
    assert check_corpus.main(["--corpus", "aishell", "--parts", "train", "dev"]) == 0
    assert check_corpus.main(["--corpus", "aishell", "--parts", "train", "eval"]) == 2
    assert capsys.readouterr().err == (
        "check_corpus: unknown aishell part(s) ['eval']; expected some of ['train', 'dev', 'test']\n"
    )
    missing = ["--corpus", "librispeech", "--parts", "test-other", "--corpus-dir", str(root)]
    assert check_corpus.main(missing) == 2
    assert capsys.readouterr().err == (
        f"check_corpus: missing part directories: {root / 'test-other'}; {root} holds the parts: dev-clean, test-clean\n"
    )
    assert check_corpus.main([*missing, "--missing-parts-ok", "true"]) == 0
    assert check_corpus.main(["--corpus", "librispeech", "--parts", "dev-clean", "--corpus-dir", str(tmp_path),
                              "--missing-parts-ok", "true"]) == 2
    assert capsys.readouterr().err.endswith(f"give --corpus-dir {root}\n")


def test_check_corpus_imports_nothing_heavy(tmp_path):
    """The recipes run it before stage 0; lhotse/torch/soundfile would cost seconds."""
    code = (
        "import sys, w2v.bin.check_corpus as c; "
        "print(sorted(m for m in ('lhotse', 'torch', 'soundfile', 'numpy', 'torchaudio') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_part_of_flacs_without_transcripts(librispeech_tiny, tmp_path):
    root = tmp_path / "LibriSpeech"
    for flac in sorted((librispeech_tiny / "dev-clean").rglob("*.flac"))[:2]:
        dest = root / "dev-clean" / flac.relative_to(librispeech_tiny / "dev-clean")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(flac.read_bytes())
    with pytest.raises(ValueError) as e:
        prepare_librispeech(root, tmp_path / "m", ["dev-clean"])
    assert str(e.value) == (
        f"part 'dev-clean' has no usable utterance "
        f"(no <speaker>-<chapter>.trans.txt under {root / 'dev-clean'}; found 2 .flac file(s))"
    )
