"""The partition map: its document, the planner and phase changes (pure), and compare-and-set in a real bucket."""

from __future__ import annotations

import asyncio

import pytest

from crossmodal.logserver import LogServer
from services.common import partitionmap, writelog
from services.common.partitionmap import (
    COPYING,
    DRAINING,
    STABLE,
    MapConflictError,
    MapError,
    MapWatcher,
    PartitionMap,
)


def test_growing_2_to_4_moves_half_the_partitions_and_spreads_them_evenly() -> None:
    first = partitionmap.initial(64, 2)
    moves = partitionmap.plan(first, 4)
    assert len(moves) == 32
    # Only partitions whose owner changes move, each to p % 4, and none leaves shards 0 and 1 for another old one.
    assert all(first.owner[p] != s and s == p % 4 and s in (2, 3) for p, s in moves.items())
    copying = partitionmap.start_move(first, 4)
    assert copying.phase == COPYING and copying.version == 2 and copying.owner == first.owner
    assert copying.held(2) == frozenset(p for p in range(64) if p % 4 == 2) and copying.owned(2) == frozenset()
    draining = partitionmap.flip(copying)
    assert draining.phase == DRAINING and draining.version == 3
    assert draining.counts() == {0: 16, 1: 16, 2: 16, 3: 16}
    # The old owner keeps what it gives away until the stable version, but answers only for what it owns.
    assert draining.held(0) == first.owned(0) and draining.owned(0) == frozenset(range(0, 64, 4))
    stable = partitionmap.finish(draining)
    assert stable.phase == STABLE and stable.version == 4 and stable.held(0) == stable.owned(0)
    assert partitionmap.plan(stable, 4) == {}


def test_shrinking_4_to_2_moves_the_partitions_of_shards_2_and_3_only() -> None:
    four = partitionmap.initial(64, 4)
    moves = partitionmap.plan(four, 2)
    assert sorted(moves) == [p for p in range(64) if p % 4 in (2, 3)]
    two = partitionmap.finish(partitionmap.flip(partitionmap.start_move(four, 2)))
    assert two.owner == partitionmap.initial(64, 2).owner and two.shards == (0, 1)


def test_each_phase_change_refuses_the_wrong_phase() -> None:
    first = partitionmap.initial(8, 2)
    with pytest.raises(MapError, match="nothing to flip"):
        partitionmap.flip(first)
    with pytest.raises(MapError, match="nothing to finish"):
        partitionmap.finish(first)
    with pytest.raises(MapError, match="nothing moves"):
        partitionmap.start_move(first, 2)
    copying = partitionmap.start_move(first, 4)
    with pytest.raises(MapError, match="already under way"):
        partitionmap.start_move(copying, 8)
    with pytest.raises(MapError, match="1 to the 8 partitions"):
        partitionmap.plan(first, 9)


def test_the_document_round_trips_and_bad_ones_are_refused() -> None:
    copying = partitionmap.start_move(partitionmap.initial(16, 2), 4)
    assert PartitionMap.decode(copying.encode()) == copying
    draining = partitionmap.flip(copying)
    assert PartitionMap.decode(draining.encode()) == draining
    bad = {
        b"not json": "does not parse",
        b'{"version": 1, "partitions": 3, "owner": [0, 1, 0]}': "power of two",
        b'{"version": 1, "partitions": 4, "owner": [0, 1]}': "lists 2 owners",
        b'{"version": 0, "partitions": 2, "owner": [0, 1]}': "versions start at 1",
        b'{"version": 2, "partitions": 2, "owner": [0, 1], "incoming": {"1": 1}, "target": 2}': "already owns",
        b'{"version": 2, "partitions": 2, "owner": [0, 0], "incoming": {"1": 1}}': "target shard count",
        b'{"version": 2, "partitions": 2, "owner": [0, 0], "incoming": {"5": 1}, "target": 2}': "out of range",
    }
    for data, message in bad.items():
        with pytest.raises(MapError, match=message):
            PartitionMap.decode(data)


def test_writes_are_compare_and_set_and_watchers_see_every_version(nats: LogServer) -> None:
    async def scenario() -> None:
        nc = await writelog.connect(writelog.LogConfig(url=nats.url), "test")
        js = nc.jetstream(timeout=5)
        kv = await partitionmap.open_bucket(js, "TEST", create=True)
        # Two processes writing version 1 at once agree on one document.
        (first, rev_a), (again, rev_b) = await asyncio.gather(
            partitionmap.ensure(kv, 8, 2), partitionmap.ensure(kv, 8, 2)
        )
        assert first == again == partitionmap.initial(8, 2) and rev_a == rev_b
        with pytest.raises(MapError, match="8 partitions but the log has 16"):
            await partitionmap.ensure(kv, 16, 2)
        watcher = MapWatcher(await partitionmap.open_bucket(js, "TEST"))
        seen: list[int] = []

        async def heard(new: PartitionMap) -> None:
            seen.append(new.version)

        watcher.listeners.append(heard)
        await watcher.start()
        copying = partitionmap.start_move(first, 4)
        revision = await partitionmap.write(kv, copying, rev_a)
        # A second driver that read the same revision loses: it must read again and carry on from there.
        with pytest.raises(MapConflictError):
            await partitionmap.write(kv, partitionmap.start_move(first, 4), rev_a)
        await partitionmap.write(kv, partitionmap.flip(copying), revision)
        for _ in range(100):
            if seen[-1:] == [3]:
                break
            await asyncio.sleep(0.05)
        assert seen == [1, 2, 3]
        # A version the watcher never kept is read from the bucket's history.
        watcher.versions.clear()
        assert await watcher.find(2, 1.0) == copying
        assert await watcher.find(9, 0.2) is None
        await watcher.stop()
        await nc.close()

    asyncio.run(scenario())
