"""Small helpers every package uses: atomic artefacts, logging, seeding, config field checks."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def setup_logging(level: int = logging.INFO) -> None:
    """icefall-style log lines: time, level, file:line, message.

    Under torchrun (``WORLD_SIZE`` > 1) each line names its rank, and ranks other than 0 log only
    warnings: N processes do not print N copies of every line.
    """
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    tag = f" [rank {rank}]" if world_size > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s %(levelname)s{tag} [%(filename)s:%(lineno)d] %(message)s",
        level=level if rank == 0 else max(level, logging.WARNING),
        force=True,
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A stage killed half way leaves either the old artefact or none, never a truncated one.
    ``suffix`` ends the temporary name (writers that pick the format from it, such as lhotse's
    ``to_file``, want e.g. ``.tmp.jsonl.gz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file 0600; artefacts get the usual permissions (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # here, not at the top: the stage-record CLI imports this module on every stage

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def str2bool(v: str) -> bool:
    """argparse type for Kaldi-style ``--flag true|false`` options."""
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"Expected true/false, got {v!r}")


def check_config_fields(cls: type, names: Iterable[str]) -> None:
    """Refuse field names the dataclass ``cls`` does not have (a misspelled option, a config dict
    from another version), naming the expected ones.

    Raises:
        ValueError: ``Unknown <cls> fields [...]; expected a subset of [...]``.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}")
