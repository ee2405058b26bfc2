"""A part's cuts manifest built in chunks that processes and machines share, and their merge.

The cuts of a part (in manifest order) are cut into contiguous chunks of ``chunk_size``. Chunk
``i`` belongs to shard ``i mod N`` of ``N`` (one per machine, SLURM task or torchrun rank); a
shard's worker processes take its chunks in turn. Each finished chunk's cuts manifest is written
atomically into ``.<stem>.chunks/`` beside the part's manifest, so a killed shard redoes at most
the chunks it was on. The part's manifest is the chunks concatenated in chunk order (the input
order, less the cuts whose audio failed); it is written by whichever shard finds every chunk done,
or by a merge-only call, which names the shards still missing.

``plan.json`` in the chunk directory pins the chunking: chunks left by another input (another
list of cut ids, another chunk size) are removed and redone, and another shard count is refused
while chunks of the old one exist (two shard counts at once would write the same chunk twice).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from lhotse import CutSet

from w2v.utils import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


def save_cuts(cuts: CutSet, path: str | Path) -> None:
    """Write a ``.jsonl.gz`` cuts manifest under a temporary name, then rename it into place."""
    # lhotse picks the format from the suffix, so the temporary name keeps ".jsonl.gz".
    with atomic_path(path, suffix=".tmp.jsonl.gz") as tmp:
        cuts.to_file(tmp)


def manifest_stem(path: str | Path) -> str:
    """``librispeech_cuts_dev-clean`` for ``.../librispeech_cuts_dev-clean.jsonl.gz``."""
    name = Path(path).name
    return name[: -len(".jsonl.gz")] if name.endswith(".jsonl.gz") else Path(name).stem


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: the chunks ``i`` with ``i mod count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected I/N with 0 <= I < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` → ``Shard(I, N)``."""
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4 (0-based I)") from None
        return cls(index, count)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Shard":
        """``RANK`` of ``WORLD_SIZE`` (torchrun, or exported per SLURM task) when set, else 0/1."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        return cls(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]))

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index


@dataclass(frozen=True)
class ChunkPlan:
    """How a part is chunked and sharded (``plan.json``)."""

    num_cuts: int
    chunk_size: int
    num_shards: int
    ids_digest: str

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.num_cuts / self.chunk_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        """Cut indices ``[start, end)`` of ``chunk`` in the part's manifest order."""
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.num_cuts)


def ids_digest(cut_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(cut_ids).encode()).hexdigest()[:16]


class ChunkedPart:
    """The chunks of the part whose manifest is ``out`` (``<dir>/<stem>.jsonl.gz``).

    ``out.parent/.<stem>.chunks/chunk-NNNNN.jsonl.gz`` are the finished chunks; ``.<stem>.lock``
    is flock-ed while a shard reads or writes the plan and while the manifest is merged.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        stem = manifest_stem(self.out)
        self.dir = self.out.parent / f".{stem}.chunks"
        self.lock_path = self.out.parent / f".{stem}.lock"

    def path(self, chunk: int) -> Path:
        return self.dir / f"chunk-{chunk:05d}.jsonl.gz"

    def is_done(self, chunk: int) -> bool:
        return self.path(chunk).is_file()

    def write(self, chunk: int, cuts: CutSet) -> None:
        """The finished cuts of ``chunk`` (atomically: a chunk exists whole or not at all)."""
        save_cuts(cuts, self.path(chunk))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def read_plan(self) -> Optional[ChunkPlan]:
        path = self.dir / PLAN_FILE
        return ChunkPlan(**json.loads(path.read_text())) if path.is_file() else None

    def begin(self, cut_ids: Sequence[str], chunk_size: int, shard: Shard) -> tuple[ChunkPlan, list[int]]:
        """Plan (or join the plan of) the part; ``shard``'s chunks not yet done, in order.

        Raises:
            RuntimeError: chunks of this input exist under another shard count.
        """
        plan = ChunkPlan(len(cut_ids), chunk_size, shard.count, ids_digest(cut_ids))
        with self._lock():
            old = self.read_plan()
            if old is not None and (old.ids_digest, old.chunk_size) != (plan.ids_digest, plan.chunk_size):
                log.warning("%s: removing chunks of another input (%s)", self.dir, old)
                shutil.rmtree(self.dir)
                old = None
            elif old is None and self.dir.exists():
                log.warning("%s: removing chunks without a plan (an older run's)", self.dir)
                shutil.rmtree(self.dir)
            if old is not None and old.num_shards != plan.num_shards:
                raise RuntimeError(
                    f"{self.out.name} was started as {old.num_shards} shard(s) ({self.dir / PLAN_FILE}); "
                    f"finish it with --shard I/{old.num_shards}, or remove {self.dir} to start over "
                    f"with {plan.num_shards}"
                )
            if old is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.dir / PLAN_FILE, json.dumps(asdict(plan), indent=2) + "\n")
        todo = [i for i in range(plan.num_chunks) if shard.owns(i) and not self.is_done(i)]
        return plan, todo

    def missing(self, plan: ChunkPlan) -> dict[int, list[int]]:
        """Unfinished chunks by the shard that owns them."""
        out: dict[int, list[int]] = {}
        for i in range(plan.num_chunks):
            if not self.is_done(i):
                out.setdefault(i % plan.num_shards, []).append(i)
        return out

    def merge(self, required: bool) -> Optional[Path]:
        """Write the part's manifest from the chunks when every chunk is done.

        Args:
            required: raise when a chunk is missing (a merge-only call); otherwise log which shards
                are still running and return None (a shard that finished before the others).
        Returns:
            ``out`` once written (by this call or another shard's), or None.
        Raises:
            FileNotFoundError: no shard has started the part.
            RuntimeError: ``required`` and chunks missing, naming the shards that own them.
            RuntimeError: every cut of the part failed.
        """
        if self.out.is_file():
            return self.out
        with self._lock():
            if self.out.is_file():  # merged by another shard while this one waited for the lock
                return self.out
            plan = self.read_plan()
            if plan is None:
                raise FileNotFoundError(f"{self.out}: no shard has computed it (no {self.dir / PLAN_FILE})")
            missing = self.missing(plan)
            if missing:
                text = "; ".join(f"shard {s}/{plan.num_shards} (chunks {', '.join(map(str, c))})"
                                 for s, c in sorted(missing.items()))
                if required:
                    raise RuntimeError(
                        f"{self.out.name}: cannot merge, unfinished {text}; run the missing shard(s) "
                        f"with --shard I/{plan.num_shards} first"
                    )
                log.info("%s: this shard is done; waiting for %s", self.out.name, text)
                return None
            # lazily: lhotse's from_file reads a chunk whose cuts all failed as None
            cuts = CutSet.from_cuts(c for i in range(plan.num_chunks) for c in CutSet.from_jsonl_lazy(self.path(i)))
            dropped = plan.num_cuts - len(cuts)
            if not len(cuts):
                raise RuntimeError(f"{self.out}: no cut could be processed ({dropped} failures)")
            if dropped:
                log.warning("%s: %d of %d cuts dropped because their audio failed", self.out.name, dropped,
                            plan.num_cuts)
            save_cuts(cuts, self.out)
            shutil.rmtree(self.dir)
            log.info("wrote %s (%d cuts from %d chunks of %d shard(s))", self.out, len(cuts), plan.num_chunks,
                     plan.num_shards)
        # Anyone still waiting holds the old inode; a later caller sees the manifest first.
        self.lock_path.unlink(missing_ok=True)
        return self.out
