"""Stage records: a recipe stage is skipped only when it was built from today's inputs.

icefall marks a finished stage with an empty ``.done`` file, so a stage is skipped because a file
exists, whatever it was built from. A record says what the outputs were built from, next to them:

```json
{"stage": "fbank test-clean", "status": "done",
 "inputs": {"data/manifests/librispeech_recordings_test-clean.jsonl.gz": "sha256:…", …},
 "options": {"speed_perturb": "false"}, "progress": {}, "outputs": ["data/fbank/…"],
 "stat": {path: [size, mtime_ns, digest]}, "pid": 123, "command": "./run.sh …", "time": "…"}
```

:func:`begin` compares what a stage is about to be built from with its record and decides:

- ``skip``: the record is ``done``, inputs and options are the same, every output exists;
- ``resume``: same inputs and identity options, but the last run did not finish or a ``progress``
  option changed (``--num-epochs 30`` after 25): the stage's command continues what is there.
  A ``resumable`` stage (training) resumes even when done: its command checks its own
  checkpoints (the newest may be truncated) and returns at once when nothing is left;
- ``rebuild``: no record, or an input or identity option changed; the stage's outputs are removed
  first (data) or moved to ``<dir>/../replaced/`` (experiment dirs, ``replace="archive"``) so that
  nothing built from the old inputs survives, and the reason is logged.

Downstream stages need no notion of a dependency graph: their inputs are the outputs of earlier
stages, so a rebuilt upstream artefact whose content changed changes their digests too, and an
upstream rebuild that gives the same bytes costs nothing downstream.

Digests: a file is hashed (sha256; a ``.gz`` file by its decompressed content, so that gzip's
header timestamp does not count) and the hash is reused while its size and mtime stay the same; a
directory counts by its listing (relative path, size and mtime of every file not hidden), which
sees audio added to or removed from a corpus part without reading hours of it.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from w2v.utils import atomic_write_text

log = logging.getLogger(__name__)

SKIP, RESUME, REBUILD = "skip", "resume", "rebuild"
_CHUNK = 1 << 20


def _hash_stream(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's content (of the decompressed content for ``.gz``)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return "sha256-gunzip:" + _hash_stream(f)
    with open(path, "rb") as f:
        return "sha256:" + _hash_stream(f)


def dir_digest(path: Path) -> str:
    """sha256 of the listing (relative path, size, mtime) of every file under ``path``, hidden
    files and directories excepted (records, locks, temporary files)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            st = p.stat()
            h.update(f"{p.relative_to(path)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return "listing:" + h.hexdigest()


def digest(path: str | os.PathLike, cache: Mapping[str, list] | None = None) -> tuple[str, list | None]:
    """(digest of ``path``, stat-cache entry ``[size, mtime_ns, digest]`` for files, else None).

    ``cache`` maps a path to the entry an earlier record stored: a file whose size and mtime
    are unchanged is not read again.
    """
    p = Path(path)
    if p.is_dir():
        return dir_digest(p), None
    if not p.is_file():
        raise FileNotFoundError(f"stage input {path} does not exist")
    st = p.stat()
    old = (cache or {}).get(str(path))
    if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
        return old[2], old
    d = file_digest(p)
    return d, [st.st_size, st.st_mtime_ns, d]


@dataclass
class Decision:
    action: str  # SKIP, RESUME or REBUILD
    reason: str

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # a damaged record is no record
        log.warning("%s: unreadable stage record (%s); treating the stage as not built", path, e)
        return None


def _diff(kind: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        if k not in new:
            out.append(f"{kind} {k} no longer used")
        elif k not in old:
            out.append(f"new {kind} {k}" + (f"={new[k]}" if kind == "option" else ""))
        elif old[k] != new[k]:
            out.append(f"{kind} {k} changed" + (f" ({old[k]} -> {new[k]})" if kind == "option" else ""))
    return out


def decide(
    record: Mapping | None,
    inputs: Mapping[str, str],
    options: Mapping[str, str],
    progress: Mapping[str, str],
    outputs: Sequence[str],
    resumable: bool = False,
) -> Decision:
    """What to do with a stage, given its old record and what it would be built from now."""
    if record is None:
        present = [o for o in outputs if os.path.lexists(o)]
        if present:
            return Decision(REBUILD, f"{present[0]} exists but no record says what it was built from")
        return Decision(REBUILD, "not built yet")
    changes = _diff("input", record.get("inputs", {}), inputs) + _diff("option", record.get("options", {}), options)
    if changes:
        return Decision(REBUILD, "; ".join(changes[:6]) + (f"; … {len(changes) - 6} more" if len(changes) > 6 else ""))
    if record.get("status") != "done":
        return Decision(RESUME, f"the run that started it (pid {record.get('pid')}, {record.get('time')}) did not finish")
    missing = [o for o in outputs if not os.path.lexists(o)]
    if missing:
        return Decision(REBUILD, f"output {missing[0]} is missing")
    moved = _diff("option", record.get("progress", {}), progress)
    if moved:
        return Decision(RESUME, "; ".join(moved))
    if resumable:
        return Decision(RESUME, "built from the same inputs and options; it checks what is left to do")
    return Decision(SKIP, "built from the same inputs and options")


def _replace(outputs: Sequence[str], archive: bool) -> list[str]:
    """Remove outputs (or move them under ``<parent>/replaced/``); return what was moved where."""
    moved = []
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for o in outputs:
        p = Path(o)
        if not os.path.lexists(p):
            continue
        if archive:
            dest = p.parent / "replaced" / f"{p.name}-{stamp}"
            n = 1
            while os.path.lexists(dest):
                n += 1
                dest = p.parent / "replaced" / f"{p.name}-{stamp}-{n}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            moved.append(f"{p} -> {dest}")
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return moved


def begin(
    record_path: str | os.PathLike,
    stage: str,
    inputs: Sequence[str] = (),
    options: Mapping[str, str] | None = None,
    progress: Mapping[str, str] | None = None,
    outputs: Sequence[str] = (),
    replace: str = "delete",
    command: str = "",
    pid: int | None = None,
    resumable: bool = False,
) -> Decision:
    """Decide (:func:`decide`) and prepare a stage; unless skipping, write a ``running`` record.

    Args:
        record_path: the record file, beside the stage's outputs (e.g. ``data/fbank/.fbank-test-clean.json``).
        stage: a name for messages, e.g. ``"fbank test-clean"``.
        inputs: files and directories the stage reads; each must exist.
        options: identity options: a change rebuilds from scratch.
        progress: options a change of which continues the stage (``num_epochs``).
        outputs: files and directories the stage writes; removed (``replace="delete"``) or moved
            aside (``"archive"``, for experiment dirs holding trained models) on a rebuild.
        command, pid: the run (command line and process id) building the stage, for messages
            about a run that did not finish; ``pid`` defaults to this process.
        resumable: never skip; the stage's command resumes (see the module docstring).
    Raises:
        FileNotFoundError: an input is missing.
    """
    if replace not in ("delete", "archive"):
        raise ValueError(f"replace must be 'delete' or 'archive', got {replace!r}")
    record_path = Path(record_path)
    old = _read(record_path)
    stat_cache = (old or {}).get("stat", {})
    digests, stat = {}, {}
    for path in inputs:
        d, entry = digest(path, stat_cache)
        digests[str(path)] = d
        if entry is not None:
            stat[str(path)] = entry
    options = {k: str(v) for k, v in (options or {}).items()}
    progress = {k: str(v) for k, v in (progress or {}).items()}
    decision = decide(old, digests, options, progress, list(outputs), resumable)
    if decision.action == SKIP:
        return decision
    if decision.action == REBUILD:
        record_path.unlink(missing_ok=True)
        moved = _replace(outputs, archive=replace == "archive")
        if moved:
            decision.reason += "; kept the old outputs: " + ", ".join(moved)
    _write(record_path, {
        "stage": stage, "status": "running", "inputs": digests, "options": options,
        "progress": progress, "outputs": list(outputs), "stat": stat,
        "pid": pid or os.getpid(), "command": command,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    })
    return decision


def finish(record_path: str | os.PathLike) -> None:
    """Mark a stage ``done`` once its outputs are complete; raises if one is missing."""
    record_path = Path(record_path)
    rec = _read(record_path)
    if rec is None:
        raise FileNotFoundError(f"{record_path}: no running record to finish (call begin first)")
    missing = [o for o in rec.get("outputs", []) if not os.path.lexists(o)]
    if missing:
        raise FileNotFoundError(f"stage {rec.get('stage')!r} finished without writing {', '.join(missing)}")
    rec["status"] = "done"
    rec["time"] = datetime.datetime.now().isoformat(timespec="seconds")
    _write(record_path, rec)


def _write(path: Path, rec: dict) -> None:
    atomic_write_text(path, json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
