"""Checkpoint files of a training run: naming, listing, resume from the newest one that loads,
stale temporaries, and keeping only the last k.

One scheme for every loop: ``<exp_dir>/<prefix>-<n>.pt`` with ``n`` an epoch (CTC training,
``epoch-N.pt``) or an update count (pretraining, ``checkpoint-N.pt``), written atomically
(``w2v.utils.atomic_path``: a hidden ``.<name>.<random>.tmp`` renamed into place).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def checkpoint_path(exp_dir: str | Path, n: int, prefix: str = "epoch") -> Path:
    return Path(exp_dir) / f"{prefix}-{n}.pt"


def list_checkpoints(exp_dir: str | Path, prefix: str = "epoch") -> list[tuple[int, Path]]:
    """``(n, path)`` of every ``<prefix>-<n>.pt`` in ``exp_dir``, in numeric order."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.pt")
    found = [(int(m.group(1)), p) for p in Path(exp_dir).glob(f"{prefix}-*.pt")
             if (m := pattern.fullmatch(p.name))]
    return sorted(found)


def remove_stale_temporaries(exp_dir: str | Path, prefix: str = "epoch") -> list[Path]:
    """Delete the temporary files a write killed half way left behind (``.<prefix>-N.pt.*.tmp``).

    Call it when a run starts, before anything of this run writes: a temporary of a running
    writer would go too.
    """
    stale = sorted(Path(exp_dir).glob(f".{prefix}-*.pt.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
        log.info("removed %s, left by a checkpoint write that did not finish", p)
    return stale


def newest_loadable(
    exp_dir: str | Path, load: Callable[[Path], Any], prefix: str = "epoch", before: int | None = None
) -> tuple[int, Path, Any] | None:
    """The newest checkpoint that ``load`` reads without error: ``(n, path, loaded)``, or None.

    Each one that fails (truncated by a full disk, say) is logged with its error and skipped,
    except one that would run code (``RefusedCheckpointError``): that stops the run.
    ``before`` ignores checkpoints numbered ``before`` and later.
    """
    from w2v.serialization import RefusedCheckpointError

    for n, path in reversed(list_checkpoints(exp_dir, prefix)):
        if before is not None and n >= before:
            continue
        try:
            return n, path, load(path)
        except RefusedCheckpointError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, EOFError) as e:
            log.warning("skipping %s: it does not load (%s)", path, e)
    return None


def keep_last(exp_dir: str | Path, k: int, prefix: str = "epoch") -> list[Path]:
    """Delete all but the ``k`` newest ``<prefix>-N.pt`` (k ≤ 0 keeps all); returns the deleted."""
    if k <= 0:
        return []
    old = [p for _, p in list_checkpoints(exp_dir, prefix)[:-k]]
    for p in old:
        p.unlink(missing_ok=True)
    if old:
        log.info("kept the last %d checkpoints; removed %s", k, ", ".join(p.name for p in old))
    return old
