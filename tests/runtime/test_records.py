"""Stage records: skip only what was built from the same inputs and options; say why otherwise."""

from __future__ import annotations

import gzip
import json
import os
import time

import pytest

from w2v.runtime import records
from w2v.runtime.records import REBUILD, RESUME, SKIP, begin, finish


@pytest.fixture
def stage(tmp_path):
    """An input file, an output file and a record path in tmp_path."""
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    out = tmp_path / "out" / "result.txt"
    return src, out, tmp_path / "out" / ".result.json"


def _build(record, src, out, **kw):
    d = begin(record, "test stage", [str(src)], outputs=[str(out)], **kw)
    if d.action != SKIP:
        out.parent.mkdir(exist_ok=True)
        out.write_text(src.read_text().upper())
        finish(record)
    return d


def test_skip_only_when_inputs_and_options_match(stage):
    src, out, record = stage
    assert _build(record, src, out, options={"k": 1}).action == REBUILD
    assert _build(record, src, out, options={"k": 1}).action == SKIP

    d = _build(record, src, out, options={"k": 2})
    assert d.action == REBUILD and "option k changed (1 -> 2)" in d.reason
    src.write_text("b\n")
    d = _build(record, src, out, options={"k": 2})
    assert d.action == REBUILD and f"input {src} changed" in d.reason
    assert out.read_text() == "B\n"  # rebuilt from the new input
    rec = json.loads(record.read_text())
    assert rec["status"] == "done" and rec["options"] == {"k": "2"}
    assert rec["inputs"][str(src)].startswith("sha256:")


def test_rebuild_removes_outdated_outputs_first(stage, tmp_path):
    src, out, record = stage
    side = tmp_path / "out" / "storage"
    side.mkdir(parents=True)
    (side / "feats-0").write_text("old")
    begin(record, "s", [str(src)], outputs=[str(out), str(side)])
    assert not side.exists()  # nothing built from other inputs survives a rebuild


def test_outputs_without_record_are_rebuilt_and_named(stage):
    src, out, record = stage
    out.parent.mkdir()
    out.write_text("made by an older version")
    d = begin(record, "s", [str(src)], outputs=[str(out)])
    assert d.action == REBUILD and d.reason == f"{out} exists but no record says what it was built from"
    assert not out.exists()


def test_unfinished_run_resumes_and_keeps_its_outputs(stage):
    src, out, record = stage
    begin(record, "s", [str(src)], outputs=[str(out)], pid=4242)
    out.parent.mkdir(exist_ok=True)
    out.write_text("half")  # killed before finish()
    d = begin(record, "s", [str(src)], outputs=[str(out)])
    assert d.action == RESUME and "pid 4242" in d.reason and "did not finish" in d.reason
    assert out.read_text() == "half"


def test_progress_option_resumes_identity_option_rebuilds(stage):
    src, out, record = stage
    _build(record, src, out, options={"lr": 1}, progress={"num_epochs": 5})
    d = begin(record, "s", [str(src)], options={"lr": 1}, progress={"num_epochs": 8}, outputs=[str(out)])
    assert d.action == RESUME and "num_epochs changed (5 -> 8)" in d.reason and out.exists()
    finish(record)
    assert _build(record, src, out, options={"lr": 1}, progress={"num_epochs": 8}).action == SKIP


def test_missing_output_rebuilds(stage):
    src, out, record = stage
    _build(record, src, out)
    out.unlink()
    d = _build(record, src, out)
    assert d.action == REBUILD and d.reason == f"output {out} is missing"


def test_missing_input_is_an_error(stage, tmp_path):
    _, out, record = stage
    with pytest.raises(FileNotFoundError, match="stage input .*nowhere.txt does not exist"):
        begin(record, "s", [str(tmp_path / "nowhere.txt")], outputs=[str(out)])


def test_archive_moves_an_experiment_aside(tmp_path):
    src = tmp_path / "cuts.txt"
    src.write_text("corpus A")
    exp = tmp_path / "exp" / "ctc_fbank"
    record = tmp_path / "exp" / ".ctc_fbank.train.json"
    begin(record, "train", [str(src)], outputs=[str(exp)], replace="archive")
    exp.mkdir(parents=True)
    (exp / "epoch-1.pt").write_text("model of corpus A")
    finish(record)
    src.write_text("corpus B")
    d = begin(record, "train", [str(src)], outputs=[str(exp)], replace="archive")
    assert d.action == REBUILD and "kept the old outputs" in d.reason
    (moved,) = (tmp_path / "exp" / "replaced").iterdir()
    assert moved.name.startswith("ctc_fbank-") and (moved / "epoch-1.pt").read_text() == "model of corpus A"
    assert not exp.exists()


def test_gzip_digest_ignores_the_header_timestamp(tmp_path):
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    with gzip.GzipFile(a, "wb", mtime=1) as f:
        f.write(b'{"id": 1}\n')
    with gzip.GzipFile(b, "wb", mtime=2) as f:
        f.write(b'{"id": 1}\n')
    assert a.read_bytes() != b.read_bytes()
    assert records.file_digest(a) == records.file_digest(b)
    with gzip.GzipFile(b, "wb", mtime=2) as f:
        f.write(b'{"id": 2}\n')
    assert records.file_digest(a) != records.file_digest(b)


def test_directory_listing_sees_added_audio(tmp_path):
    part = tmp_path / "train-clean-100"
    (part / "19" / "198").mkdir(parents=True)
    (part / "19" / "198" / "19-198-0000.flac").write_bytes(b"x" * 10)
    before = records.dir_digest(part)
    (part / ".hidden.lock").write_text("")  # records and locks do not count
    assert records.dir_digest(part) == before
    (part / "19" / "198" / "19-198-0001.flac").write_bytes(b"y" * 10)
    assert records.dir_digest(part) != before


def test_unchanged_file_is_not_read_again(stage, monkeypatch):
    src, out, record = stage
    _build(record, src, out)
    reads = []
    monkeypatch.setattr(records, "file_digest", lambda p: reads.append(p) or "sha256:x")
    assert _build(record, src, out).action == SKIP and reads == []
    time.sleep(0.01)
    src.write_text("a\n")  # same content, new mtime: read again, same digest
    os.utime(src, ns=(time.time_ns(), time.time_ns()))
    monkeypatch.undo()
    assert _build(record, src, out).action == SKIP


def test_finish_requires_every_output(stage):
    src, out, record = stage
    begin(record, "fbank dev", [str(src)], outputs=[str(out)])
    with pytest.raises(FileNotFoundError, match=f"stage 'fbank dev' finished without writing {out}"):
        finish(record)


def test_a_resumable_stage_is_never_skipped(stage):
    src, out, record = stage
    _build(record, src, out, resumable=True)
    d = begin(record, "train", [str(src)], outputs=[str(out)], resumable=True)
    assert d.action == RESUME and "it checks what is left to do" in d.reason
