"""Unit tests of one shard with real USearch and real SQLite files: writes, guards, snapshots, compaction."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.common.limits import LimitError, Limits
from services.index import shard as shard_module
from services.index.domain import MODALITY_IMAGE, Item, SearchQuery, make_filter
from services.index.errors import InvalidArgumentError, PreconditionError, ShardUnavailableError
from tests.index.helpers import DIM, MODEL, brute_force, make_item, open_shard, vector_of, vectors
from tests.support import wait_for


def rebuilds(shard: int, reason: str) -> float:
    """How often shard `shard` was rebuilt for `reason` in this process so far."""
    value = REGISTRY.get_sample_value("crossmodal_index_rebuilds_total", {"shard": str(shard), "reason": reason})
    return value or 0.0


def live_ids_by_exact_search(shard: object, query: np.ndarray, k: int = 1000) -> list[str]:
    """Every id an exhaustive search returns (k above the item count)."""
    result = shard.search(SearchQuery(query, k, exact=True))  # type: ignore[attr-defined]
    return [hit.id for hit in result.hits]


def test_upsert_then_get_returns_the_exact_vector_and_metadata(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(1, 3) * 3.5  # not normalised: the store keeps what the caller sent
    items = [make_item(i, x[i], {"colour": f"c{i}"}, ("a", "b")) for i in range(3)]
    result = shard.upsert(MODEL, items)
    assert result.errors == [None, None, None]
    assert result.version == 1
    got, missing = shard.get(["item-2", "nope", "item-0"], include_vectors=True)
    assert missing == ["nope"]
    assert [g.id for g in got] == ["item-2", "item-0"]
    assert np.array_equal(vector_of(got[0].vector), x[2])
    assert got[0].metadata == {"colour": "c2"}
    assert got[0].tags == ("a", "b")
    assert got[0].modality == MODALITY_IMAGE
    assert got[0].version == 1
    without, _ = shard.get(["item-1"], include_vectors=False)
    assert without[0].vector is None
    shard.close()


def test_reupsert_replaces_vector_and_metadata(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(2, 50)
    shard.upsert(MODEL, [make_item(i, x[i], {"gen": "1"}) for i in range(40)])
    # item-0 moves to a new vector with new metadata.
    result = shard.upsert(MODEL, [make_item(0, x[45], {"gen": "2"})])
    assert result.version == 2
    hits = shard.search(SearchQuery(x[45], 3)).hits
    assert hits[0].id == "item-0"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"gen": "2"}
    assert [h.id for h in hits].count("item-0") == 1
    old = shard.search(SearchQuery(x[0], 40, exact=True)).hits
    assert all(not (h.id == "item-0" and h.score > 0.999) for h in old)
    assert [h.id for h in old].count("item-0") == 1
    got, _ = shard.get(["item-0"], include_vectors=True)
    assert np.array_equal(vector_of(got[0].vector), x[45])
    assert got[0].version == 2
    stats = shard.stats()
    assert (stats.count, stats.deleted, stats.version) == (40, 1, 2)
    shard.close()


def test_delete_and_readd_the_same_id_many_times(tmp_path: Path) -> None:
    # usearch #445: wrong results after delete and re-add. Every write gets a fresh key here.
    shard = open_shard(tmp_path)
    background = vectors(3, 100)
    shard.upsert(MODEL, [make_item(i, background[i], prefix="bg") for i in range(100)])
    cycle = vectors(4, 30)
    for generation in range(30):
        shard.upsert(MODEL, [make_item(7, cycle[generation], {"gen": str(generation)})])
        hits = shard.search(SearchQuery(cycle[generation], 5)).hits
        assert hits[0].id == "item-7"
        assert hits[0].metadata == {"gen": str(generation)}
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert shard.delete(["item-7"])[0] == 1
        assert "item-7" not in live_ids_by_exact_search(shard, cycle[generation])
        assert all(h.id != "item-7" for h in shard.search(SearchQuery(cycle[generation], 20)).hits)
        assert shard.get(["item-7"], include_vectors=False)[1] == ["item-7"]
    assert shard.stats().count == 100
    shard.close()


def test_deleted_items_are_never_returned(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(5, 400)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(400)])
    deleted_ids = [f"item-{i}" for i in range(0, 400, 2)]
    deleted, _ = shard.delete(deleted_ids + ["never-existed"])
    assert deleted == 200
    live = {f"item-{i}" for i in range(1, 400, 2)}
    assert set(live_ids_by_exact_search(shard, x[0])) == live
    for q in range(0, 400, 25):
        ids = [h.id for h in shard.search(SearchQuery(x[q], 30)).hits]
        assert set(ids) <= live
        assert len(ids) == len(set(ids))
    # Deleting again changes nothing and spends no version.
    version = shard.stats().version
    assert shard.delete(deleted_ids[:5]) == (0, version)
    shard.close()


def test_the_last_of_duplicate_ids_in_a_batch_wins(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(6, 2)
    result = shard.upsert(MODEL, [make_item(0, x[0], {"n": "first"}), make_item(0, x[1], {"n": "second"})])
    assert result.errors == [None, None]
    got, _ = shard.get(["item-0"], include_vectors=True)
    assert got[0].metadata == {"n": "second"}
    assert np.array_equal(vector_of(got[0].vector), x[1])
    assert shard.stats().count == 1
    assert [h.id for h in shard.search(SearchQuery(x[0], 5, exact=True)).hits] == ["item-0"]
    shard.close()


def test_a_shard_refuses_another_model(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(7, 2)
    shard.upsert(MODEL, [make_item(0, x[0])])
    with pytest.raises(PreconditionError, match="test-model"):
        shard.upsert("other-model", [make_item(1, x[1])])
    with pytest.raises(PreconditionError):
        shard.search(SearchQuery(x[0], 1, model_id="other-model"))
    assert shard.search(SearchQuery(x[0], 1, model_id=MODEL)).hits[0].id == "item-0"
    assert shard.search(SearchQuery(x[0], 1)).hits[0].id == "item-0"
    with pytest.raises(InvalidArgumentError, match="model_id"):
        shard.upsert("", [make_item(1, x[1])])
    assert shard.stats().count == 1
    shard.close()


def test_bad_items_are_refused_one_by_one(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, limits=Limits(max_metadata_bytes=256))
    x = vectors(8, 2)
    nan = x[0].copy()
    nan[3] = np.nan
    inf = x[0].copy()
    inf[5] = np.inf
    bad = {
        "nan": Item("nan", MODALITY_IMAGE, nan),
        "inf": Item("inf", MODALITY_IMAGE, inf),
        "zero": Item("zero", MODALITY_IMAGE, np.zeros(DIM, np.float32)),
        "empty vector": Item("empty-vector", MODALITY_IMAGE, np.zeros(0, np.float32)),
        "empty id": Item("", MODALITY_IMAGE, x[0]),
        "long id": Item("x" * 257, MODALITY_IMAGE, x[0]),
        "multi-byte long id": Item("é" * 129, MODALITY_IMAGE, x[0]),
        "metadata": Item("meta", MODALITY_IMAGE, x[0], {"k": "v" * 300}),
        "tags bytes": Item("tagbytes", MODALITY_IMAGE, x[0], {}, ("t" * 300,)),
        "too many tags": Item("tags", MODALITY_IMAGE, x[0], {}, tuple(f"{i}" for i in range(65))),
        "empty tag": Item("emptytag", MODALITY_IMAGE, x[0], {}, ("",)),
        "empty key": Item("emptykey", MODALITY_IMAGE, x[0], {"": "v"}),
        "no modality": Item("nomodality", 0, x[0]),
        "unknown modality": Item("badmodality", 7, x[0]),
    }
    good = make_item(1, x[1])
    first = shard.upsert(MODEL, [good])  # fixes the shard's dimension
    assert first.errors == [None]
    wrong_dim = Item("wrongdim", MODALITY_IMAGE, vectors(9, 1, DIM + 1)[0])
    batch = [*bad.values(), wrong_dim, make_item(2, x[0])]
    result = shard.upsert(MODEL, batch)
    assert result.errors[-1] is None
    reasons = {name: error or "" for name, error in zip([*bad.keys(), "wrong dim"], result.errors[:-1], strict=True)}
    assert all(reasons.values()), reasons
    assert "NaN or infinite" in reasons["nan"] and "NaN or infinite" in reasons["inf"]
    assert "zero length" in reasons["zero"]
    assert "has 33 values" in reasons["wrong dim"]
    assert "longer than 256 bytes" in reasons["long id"] and "longer than 256" in reasons["multi-byte long id"]
    assert "the limit is 256" in reasons["metadata"]
    assert "65 tags; the limit is 64" in reasons["too many tags"]
    assert shard.stats().count == 2
    assert "é" * 128 not in [i.id for i in shard.get(["é" * 128], include_vectors=False)[0]]
    # Ids of exactly 256 bytes are fine.
    assert shard.upsert(MODEL, [Item("é" * 128, MODALITY_IMAGE, x[0])]).errors == [None]
    shard.close()


def test_an_all_bad_batch_commits_nothing(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    result = shard.upsert(MODEL, [Item("a", MODALITY_IMAGE, np.zeros(DIM, np.float32))])
    assert result.errors[0] and result.version == 0
    assert shard.stats().dim == 0 and shard.stats().model_id == ""
    shard.close()


def test_configured_dimension_is_enforced(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, dim=16)
    result = shard.upsert(MODEL, [make_item(0, vectors(10, 1, 32)[0]), make_item(1, vectors(10, 1, 16)[0])])
    assert result.errors[0] is not None and "has 32 values" in result.errors[0]
    assert result.errors[1] is None
    shard.close()
    with pytest.raises(PreconditionError, match="16-d"):
        open_shard(tmp_path, dim=64)


def test_query_guards(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(11, 3)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(3)])
    nan = x[0].copy()
    nan[0] = np.nan
    for vector, message in [
        (nan, "NaN"),
        (np.full(DIM, np.inf, np.float32), "NaN or infinite"),
        (np.zeros(DIM, np.float32), "zero length"),
        (x[0][:-1], "has 31 values"),
    ]:
        with pytest.raises(LimitError, match=message):
            shard.search(SearchQuery(vector, 1))
    with pytest.raises(InvalidArgumentError, match="k must be"):
        shard.search(SearchQuery(x[0], 0))
    for bad_id, message in [("", "id is empty"), ("y" * 257, "longer than 256 bytes")]:
        with pytest.raises(LimitError, match=message):
            shard.get([bad_id], include_vectors=False)
        with pytest.raises(LimitError, match=message):
            shard.delete([bad_id])
    shard.close()


def test_an_empty_shard_answers_empty(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    assert shard.search(SearchQuery(vectors(12, 1)[0], 5)).hits == []
    # Nothing to save: said so, rather than answered as if a snapshot had been written.
    with pytest.raises(PreconditionError, match="no vectors yet"):
        shard.snapshot()
    assert shard.stats().snapshot_age_seconds == -1.0
    assert not list((tmp_path / "shard-0").glob("index-*"))
    shard.close()


def test_restart_loads_the_snapshot_and_replays_newer_writes(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, number=11)
    x = vectors(13, 300)
    shard.upsert(MODEL, [make_item(i, x[i], {"gen": "1"}) for i in range(200)])
    written = shard.snapshot()
    assert written is not None and written[0] == 1
    # After the snapshot: new items, replacements and deletes, all only in the store.
    shard.upsert(MODEL, [make_item(i, x[i], {"gen": "2"}) for i in range(200, 300)])
    shard.upsert(MODEL, [make_item(i, x[299 - i], {"gen": "3"}) for i in range(0, 20)])
    shard.delete([f"item-{i}" for i in range(20, 60)])
    before = {reason: rebuilds(11, reason) for reason in ("missing", "damaged", "inconsistent", "config_changed")}
    shard.close(snapshot=False)

    reopened = open_shard(tmp_path, number=11)
    assert {reason: rebuilds(11, reason) for reason in before} == before
    stats = reopened.stats()
    assert (stats.count, stats.version, stats.snapshot_version) == (260, 4, 1)
    assert stats.deleted == 60  # 20 replaced + 40 deleted, still marked in the graph
    expected = {f"item-{i}" for i in range(300) if not 20 <= i < 60}
    assert set(live_ids_by_exact_search(reopened, x[0])) == expected
    top = reopened.search(SearchQuery(x[299], 1)).hits[0]
    assert top.id == "item-0" and top.metadata == {"gen": "3"}
    reopened.close()


def test_restart_without_a_snapshot_rebuilds_from_the_store(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, number=12)
    x = vectors(14, 50)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(50)])
    shard.close(snapshot=False)
    before = rebuilds(12, "missing")
    reopened = open_shard(tmp_path, number=12)
    assert rebuilds(12, "missing") == before + 1
    assert len(live_ids_by_exact_search(reopened, x[0])) == 50
    reopened.close()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "garbage"])
def test_a_damaged_snapshot_means_a_rebuild_not_a_loss(tmp_path: Path, damage: str) -> None:
    shard = open_shard(tmp_path, number=13)
    x = vectors(15, 120)
    shard.upsert(MODEL, [make_item(i, x[i], {"i": str(i)}) for i in range(100)])
    shard.snapshot()
    shard.upsert(MODEL, [make_item(i, x[i], {"i": str(i)}) for i in range(100, 120)])
    shard.close()
    (snapshot,) = list((tmp_path / "shard-13").glob("index-*.usearch"))
    data = bytearray(snapshot.read_bytes())
    if damage == "truncate":
        snapshot.write_bytes(data[: len(data) // 3])
    elif damage == "flip":
        for offset in range(len(data) // 2, len(data) // 2 + 64):
            data[offset] ^= 0xFF
        snapshot.write_bytes(data)
    elif damage == "garbage":
        snapshot.write_bytes(b"\0" * len(data))
    else:
        snapshot.unlink()
    reason = "missing" if damage == "delete" else "damaged"
    before = rebuilds(13, reason)
    reopened = open_shard(tmp_path, number=13)
    assert rebuilds(13, reason) == before + 1
    assert len(live_ids_by_exact_search(reopened, x[0])) == 120
    for i in range(0, 120, 7):
        hit = reopened.search(SearchQuery(x[i], 1)).hits[0]
        assert (hit.id, hit.metadata) == (f"item-{i}", {"i": str(i)})
    reopened.close()


def test_a_dtype_or_connectivity_change_rebuilds_the_graph(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, number=14, dtype="f32")
    x = vectors(16, 80)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(80)])
    shard.close()
    before = rebuilds(14, "config_changed")
    for dtype in ("f16", "i8"):
        reopened = open_shard(tmp_path, number=14, dtype=dtype)
        assert reopened.stats().dtype == dtype
        assert reopened.search(SearchQuery(x[3], 1)).hits[0].id == "item-3"
        reopened.close()
    reconnected = open_shard(tmp_path, number=14, dtype="i8", connectivity=8)
    assert reconnected.search(SearchQuery(x[5], 1)).hits[0].id == "item-5"
    reconnected.close()
    assert rebuilds(14, "config_changed") == before + 3
    # Only expansion_search changed: the snapshot is kept.
    tuned = open_shard(tmp_path, number=14, dtype="i8", connectivity=8, expansion_search=200)
    tuned.close()
    assert rebuilds(14, "config_changed") == before + 3


def test_compaction_rebuilds_without_deleted_entries(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, number=15, compact_min_deleted=50, compact_ratio=0.5)
    x = vectors(17, 300)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(300)])
    shard.delete([f"item-{i}" for i in range(100)])
    assert not shard.should_compact()
    shard.delete([f"item-{i}" for i in range(100, 160)])
    assert shard.should_compact()
    assert shard.compact()
    stats = shard.stats()
    assert (stats.count, stats.deleted) == (140, 0)
    assert stats.snapshot_version == stats.version
    expected = {f"item-{i}" for i in range(160, 300)}
    assert set(live_ids_by_exact_search(shard, x[0])) == expected
    assert shard.search(SearchQuery(x[200], 1)).hits[0].id == "item-200"
    shard.close()
    reopened = open_shard(tmp_path, number=15)
    assert reopened.stats().deleted == 0
    assert set(live_ids_by_exact_search(reopened, x[0])) == expected
    reopened.close()


def test_an_explicit_snapshot_first_rebuilds_a_graph_a_failed_update_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = open_shard(tmp_path, number=16)
    x = vectors(22, 60)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(50)])

    def fail(vectors: np.ndarray) -> np.ndarray:
        raise RuntimeError("injected: USearch could not grow the graph")

    with monkeypatch.context() as patched:
        patched.setattr(shard_module, "unit_rows", fail)
        with pytest.raises(RuntimeError, match="injected"):
            shard.upsert(MODEL, [make_item(i, x[i]) for i in range(50, 60)])
    # The commit stands (version 2) but the graph missed it: a snapshot of it as it is would be wrong.
    before = {reason: rebuilds(16, reason) for reason in ("recovery", "missing", "inconsistent")}
    version, _ = shard.snapshot()
    assert version == shard.stats().snapshot_version == shard.stats().version == 2
    assert rebuilds(16, "recovery") == before["recovery"] + 1
    shard.close(snapshot=False)
    reopened = open_shard(tmp_path, number=16)
    # The restart loads that snapshot as it is: nothing to rebuild, every committed item in it.
    assert {reason: rebuilds(16, reason) for reason in before} == {**before, "recovery": before["recovery"] + 1}
    assert set(live_ids_by_exact_search(reopened, x[0])) == {f"item-{i}" for i in range(60)}
    assert reopened.search(SearchQuery(x[55], 1)).hits[0].id == "item-55"
    reopened.close()


def test_maintenance_snapshots_only_when_due(tmp_path: Path) -> None:
    shard = open_shard(tmp_path, snapshot_interval_seconds=3600.0)
    x = vectors(18, 10)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(10)])
    shard.maintain()
    assert shard.stats().snapshot_version == 0
    shard.close(snapshot=False)
    eager = open_shard(tmp_path, snapshot_interval_seconds=0.05)

    # The interval counts from opening when there is no snapshot yet: wait for it by polling maintenance.
    def snapshotted() -> bool:
        eager.maintain()
        return eager.stats().snapshot_version == 1

    wait_for(snapshotted, 10, "a scheduled snapshot")
    assert not eager.snapshot_due()
    eager.close()


def test_snapshot_age_grows_with_time_and_restarts_at_each_snapshot(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(21, 4)
    shard.upsert(MODEL, [make_item(i, x[i]) for i in range(4)])
    assert shard.snapshot_age() == -1.0
    shard.snapshot()
    fresh = shard.snapshot_age()
    time.sleep(0.5)
    aged = shard.snapshot_age()
    # Bounded both ways: it counts the time that passed, not less, and not from some earlier moment.
    assert 0.5 <= aged - fresh < 5.0 and aged < 5.0, (fresh, aged)
    shard.upsert(MODEL, [make_item(0, x[3])])
    shard.snapshot()
    again = shard.snapshot_age()
    assert 0.0 <= again < aged - 0.4, (again, aged)
    assert shard.stats().snapshot_age_seconds >= again
    shard.close()


def test_one_directory_one_process(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    with pytest.raises(ShardUnavailableError, match="in use"):
        open_shard(tmp_path)
    shard.close()
    with pytest.raises(ShardUnavailableError, match="closed"):
        shard.search(SearchQuery(vectors(19, 1)[0], 1))
    again = open_shard(tmp_path)
    again.close()


def test_exhaustive_search_matches_brute_force(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(20, 500)
    items = {f"item-{i}": make_item(i, x[i]) for i in range(500)}
    shard.upsert(MODEL, list(items.values()))
    for q in vectors(21, 10):
        hits = shard.search(SearchQuery(q, 10, exact=True)).hits
        assert [h.id for h in hits] == brute_force(items, q, 10)
        for hit in hits:
            assert math.isclose(hit.score, float(np.dot(items[hit.id].vector, q)), abs_tol=1e-5)
    shard.close()


def test_try_search_answers_plain_searches_at_once_and_declines_the_rest(tmp_path: Path) -> None:
    shard = open_shard(tmp_path)
    x = vectors(3, 30)
    shard.upsert(MODEL, [make_item(i, x[i], {"n": str(i)}) for i in range(30)])
    plain = SearchQuery(x[4], 5)
    assert shard.try_search(plain) == shard.search(plain)
    # What may take long or read the store goes to a worker thread instead: try_search declines it.
    assert shard.try_search(SearchQuery(x[4], 5, exact=True)) is None
    assert shard.try_search(SearchQuery(x[4], 5, include_vectors=True)) is None
    assert shard.try_search(SearchQuery(x[4], 5, filter=make_filter(MODALITY_IMAGE, [], (), ()))) is None
    # A writer holding the index (here: the lock a write takes) makes it decline rather than block the caller.
    with shard._index_lock:
        assert shard.try_search(plain) is None
    assert shard.try_search(plain) == shard.search(plain)
    shard.close()
