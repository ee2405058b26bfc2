"""Chunked parts: shard parsing, the plan that pins chunking and shard count, and the merge."""

from __future__ import annotations

import logging

import pytest
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from w2v.features.parts import ChunkedPart, Shard


def test_shard_from_text_and_environment():
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError, match="I/N"):
            Shard.parse(bad)
    assert Shard.from_env({"RANK": "1", "WORLD_SIZE": "3"}) == Shard(1, 3)
    assert Shard.from_env({}) == Shard(0, 1)
    assert [i for i in range(7) if Shard(1, 3).owns(i)] == [1, 4]


def _cuts(n):
    return [dummy_cut(i) for i in range(n)]


def test_plan_merge_order_missing_shards_and_stale_chunks(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cuts = _cuts(7)
    ids = [c.id for c in cuts]
    part = ChunkedPart(tmp_path / "toy_cuts_train.jsonl.gz")
    plan, todo = part.begin(ids, 2, Shard(1, 2))
    assert (plan.num_chunks, todo, plan.bounds(3)) == (4, [1, 3], (6, 7))
    for i in todo:
        part.write(i, CutSet.from_cuts(cuts[slice(*plan.bounds(i))]))
    assert part.merge(required=False) is None and "waiting for shard 0/2 (chunks 0, 2)" in caplog.text
    with pytest.raises(RuntimeError, match=r"unfinished shard 0/2 \(chunks 0, 2\)"):
        part.merge(required=True)
    with pytest.raises(RuntimeError, match="started as 2 shard"):
        part.begin(ids, 2, Shard(0, 3))  # another shard count while shard 1/2's chunks exist
    _, todo = part.begin(ids, 2, Shard(0, 2))
    assert todo == [0, 2]
    part.write(0, CutSet.from_cuts(cuts[0:2]))
    part.write(2, CutSet.from_cuts(cuts[4:5]))  # cut 5 failed
    assert part.merge(required=True) == part.out
    assert list(CutSet.from_file(part.out).ids) == [ids[i] for i in (0, 1, 2, 3, 4, 6)]
    assert not part.dir.exists() and not part.lock_path.exists()
    assert part.merge(required=True) == part.out  # merged already: nothing to do


def test_chunks_of_another_input_are_redone(tmp_path, caplog):
    part = ChunkedPart(tmp_path / "toy_cuts_train.jsonl.gz")
    ids = [c.id for c in _cuts(4)]
    part.begin(ids, 2, Shard())
    part.write(0, CutSet.from_cuts(_cuts(2)))
    assert part.begin(ids, 2, Shard())[1] == [1]  # resumed
    assert part.begin(ids[:3], 2, Shard())[1] == [0, 1]  # another cut list: chunk 0 removed
    assert "removing chunks of another input" in caplog.text
    with pytest.raises(FileNotFoundError, match="no shard has computed it"):
        ChunkedPart(tmp_path / "other_cuts_x.jsonl.gz").merge(required=True)
