"""A shard in log mode: searches limited to the partitions owned at a map version, and dropping a moved one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.placement import item_hash
from services.index.domain import Item, LogOp, SearchQuery
from services.index.shard import Shard
from tests.index.helpers import MODEL, brute_force, make_item, open_shard, vectors

PARTITIONS = 8


def _partition(item_id: str) -> int:
    return item_hash(item_id) % PARTITIONS


def _load(path: Path, count: int = 400) -> tuple[Shard, dict[str, Item]]:
    """A shard fed through the log, as a follower feeds it: each partition's items as one batch."""
    shard = open_shard(path)
    shard.use_partitions(PARTITIONS)
    items = {item.id: item for item in (make_item(i, v) for i, v in enumerate(vectors(3, count)))}
    for partition in range(PARTITIONS):
        mine = [item for item in items.values() if _partition(item.id) == partition]
        ops = [LogOp(n + 1, item.id, MODEL, item) for n, item in enumerate(mine)]
        shard.apply_log(partition, len(ops), ops)
    return shard, items


def test_a_search_answers_only_from_the_partitions_it_is_given(tmp_path: Path) -> None:
    shard, items = _load(tmp_path)
    owned = frozenset({1, 2, 5})
    query = vectors(9, 1)[0]
    for exact in (False, True):
        plain = SearchQuery(vector=query, k=10, exact=exact)
        limited = dataclasses.replace(plain, filter=dataclasses.replace(plain.filter, partitions=owned))
        got = [h.id for h in shard.search(limited).hits]
        want = brute_force(items, query, 10, keep=lambda item: _partition(item.id) in owned)
        assert got == want
        # Owning every partition it stores is the steady state: the plain graph search, on the event loop.
        everything = dataclasses.replace(plain.filter, partitions=frozenset(range(PARTITIONS)))
        if not exact:
            assert shard.try_search(dataclasses.replace(plain, filter=everything)) is not None
        assert [h.id for h in shard.search(dataclasses.replace(plain, filter=everything)).hits] == [
            h.id for h in shard.search(plain).hits
        ]
    nothing = dataclasses.replace(plain.filter, partitions=frozenset())
    assert shard.search(SearchQuery(vector=query, k=10, filter=nothing)).hits == []
    shard.close()


def test_a_dropped_partition_loses_its_items_and_position_for_good(tmp_path: Path) -> None:
    shard, items = _load(tmp_path)
    gone = [i for i in items if _partition(i) == 3]
    assert gone and shard.log_position(3) == len(gone)
    counts = dict(shard.stats().partition_items)
    assert counts[3] == len(gone) and sum(counts.values()) == len(items)
    assert shard.drop_partition(3) == len(gone)
    assert shard.log_position(3) == 0 and 3 not in shard.held_partitions()
    found, missing = shard.get(gone, include_vectors=False)
    assert not found and sorted(missing) == sorted(gone)
    assert shard.stats().count == len(items) - len(gone)
    shard.close()
    # A restart (snapshot or replay) does not bring them back.
    again = open_shard(tmp_path)
    again.use_partitions(PARTITIONS)
    assert again.stats().count == len(items) - len(gone) and again.log_position(3) == 0
    assert 3 not in dict(again.stats().partition_items)
    again.close()
