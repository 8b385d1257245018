"""Unit tests of applying write-log batches to a shard (`Shard.apply_log`, `Store.apply_log`), no NATS needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.index.domain import LogOp, SearchQuery
from services.index.store import LogPositionError
from tests.index.helpers import DIM, MODEL, make_item, open_shard, vectors

VECS = vectors(3, 20)


def up(sequence: int, i: int, gen: int = 0, model: str = MODEL) -> LogOp:
    """An upsert of item-i (its vector picked by gen) at `sequence`."""
    item = make_item(i, VECS[(i + gen) % len(VECS)], {"gen": str(gen)})
    return LogOp(sequence, item.id, model, item)


def rm(sequence: int, i: int) -> LogOp:
    """A delete of item-i at `sequence`."""
    return LogOp(sequence, f"item-{i}")


def live(shard: object, ids: list[str]) -> dict[str, str]:
    """id -> gen of the stored ones among `ids`."""
    items, _ = shard.get(ids, False)  # type: ignore[attr-defined]
    return {it.id: it.metadata["gen"] for it in items}


IDS = [f"item-{i}" for i in range(6)]


def test_a_batch_applies_in_order_and_the_later_write_of_an_id_wins(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    result = shard.apply_log(3, 9, [up(1, 0), up(2, 1), rm(4, 0), up(5, 1, gen=1), rm(6, 2), up(7, 2), up(9, 3)])
    assert live(shard, IDS) == {"item-1": "1", "item-2": "0", "item-3": "0"}
    assert dict(result.applied) == {"upsert": 5, "delete": 2} and result.position == 9
    assert shard.log_position(3) == 9 and shard.log_position(1) == 0
    # The graph agrees with the store: an exact search returns exactly the live ids.
    hits = shard.search(SearchQuery(VECS[0], k=10, exact=True)).hits
    assert sorted(h.id for h in hits) == ["item-1", "item-2", "item-3"]
    shard.close()


def test_positions_survive_a_restart_and_covered_writes_are_never_applied_again(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    shard.apply_log(0, 4, [up(2, 0), up(4, 1)])
    shard.apply_log(2, 5, [up(5, 2)])
    version = shard.stats().version
    shard.close()
    shard = open_shard(tmp_path)
    assert (shard.log_position(0), shard.log_position(2)) == (4, 5)
    # A batch the position covers changes nothing; a mixed one applies only what is new.
    again = shard.apply_log(0, 4, [up(2, 0, gen=7), up(4, 1, gen=7)])
    assert dict(again.skipped) == {"already_applied": 2} and shard.stats().version == version
    mixed = shard.apply_log(0, 8, [rm(4, 0), up(8, 3)])
    assert dict(mixed.skipped) == {"already_applied": 1} and dict(mixed.applied) == {"upsert": 1}
    assert live(shard, IDS) == {"item-0": "0", "item-1": "0", "item-2": "0", "item-3": "0"}
    shard.close()


def test_the_store_refuses_a_batch_read_after_another_position(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    shard.apply_log(1, 3, [up(3, 0)])
    store = shard._store
    item = make_item(5, VECS[5])
    with pytest.raises(LogPositionError):
        store.apply_log(1, 0, 6, MODEL, DIM, [item], [])
    with pytest.raises(LogPositionError):
        store.apply_log(1, 3, 3, MODEL, DIM, [item], [])
    # Nothing of a refused batch was stored.
    assert store.get(["item-5"], False) == {} and store.log_positions == {1: 3}
    shard.close()


def test_refused_writes_are_skipped_and_their_position_still_advances(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    bad_vector = make_item(2, np.zeros(DIM, dtype=np.float32))
    result = shard.apply_log(
        0,
        6,
        [
            up(1, 0),
            up(2, 1, model="other-model"),
            LogOp(3, bad_vector.id, MODEL, bad_vector),
            up(4, 3, model=""),
            LogOp(5, "", MODEL),
        ],
    )
    assert dict(result.skipped) == {"model": 2, "invalid": 2} and dict(result.applied) == {"upsert": 1}
    assert live(shard, IDS) == {"item-0": "0"} and shard.log_position(0) == 6
    # A batch of nothing but refused writes still moves the position, without a new store version.
    version = shard.stats().version
    shard.apply_log(0, 7, [up(7, 4, model="other-model")])
    assert shard.log_position(0) == 7 and shard.stats().version == version
    shard.close()
