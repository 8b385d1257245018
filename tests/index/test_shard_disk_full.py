"""A shard whose data directory runs out of space (a real tmpfs): writes and snapshots roll back cleanly."""

from __future__ import annotations

import errno
import hashlib
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.index.domain import Item, SearchQuery, ShardStats
from services.index.errors import StorageFullError
from services.index.servicer import status_code_for
from services.index.shard import Shard, is_disk_full
from tests.index.helpers import MODEL, make_item, open_shard, vectors
from tests.index.tmpfs import fill, integrity, mounted_tmpfs
from tests.support import wait_for

MiB = 1 << 20


def _items(seed: int, start: int, n: int) -> list[Item]:
    vecs = vectors(seed, n)
    return [make_item(start + i, vecs[i], {"n": str(start + i)}, (f"t{i % 3}",)) for i in range(n)]


def _snapshot_files(directory: Path) -> dict[str, str]:
    """Every snapshot-like file in the shard directory (temporary ones too) with its sha256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("index-*"))}


def _write_errors(op: str) -> float:
    labels = {"shard": "0", "op": op, "reason": "disk_full"}
    return REGISTRY.get_sample_value("crossmodal_index_write_errors_total", labels) or 0.0


def _counts_of(stats: ShardStats) -> tuple[int, int, int, int]:
    return stats.count, stats.deleted, stats.version, stats.snapshot_version


def _counts(shard: Shard) -> tuple[int, int, int, int]:
    """Live and deleted entries, store version and snapshot version (what a write or snapshot changes)."""
    return _counts_of(shard.stats())


def _assert_intact(shard: Shard, stored: dict[str, Item]) -> None:
    found, missing = shard.get(list(stored), include_vectors=True)
    assert missing == []
    for item in found:
        want = stored[item.id]
        assert item.vector is not None and np.array_equal(item.vector, want.vector)
        assert (item.modality, dict(item.metadata), item.tags) == (want.modality, want.metadata, want.tags)
    for sample in list(stored.values())[::25]:
        hits = shard.search(SearchQuery(vector=sample.vector, k=1, exact=True)).hits
        assert hits[0].id == sample.id


def test_full_disk_rolls_back_writes_and_snapshots_then_writes_resume(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "mnt", 4 * MiB) as mnt:
        shard = open_shard(mnt, snapshot_interval_seconds=0.05)
        stored = {item.id: item for item in _items(1, 0, 400)}
        for start in range(0, 400, 100):
            shard.upsert(MODEL, list(stored.values())[start : start + 100])
        shard.snapshot()
        # Committed but not in the snapshot yet: the background pass below has something to write.
        late = _items(2, 400, 20)
        shard.upsert(MODEL, late)
        stored.update((item.id, item) for item in late)
        before_stats = shard.stats()
        before_files = _snapshot_files(shard.directory)
        assert len(before_files) == 1

        fill(mnt / "filler")
        refused = _items(3, 1000, 300)
        with pytest.raises(StorageFullError) as info:
            shard.upsert(MODEL, refused)
        message = str(info.value)
        assert "shard 0" in message and str(shard.directory) in message
        assert "is full" in message and "free space" in message and "retry" in message
        with pytest.raises(StorageFullError):
            shard.delete([f"item-{i}" for i in range(200)])
        with pytest.raises(StorageFullError):
            shard.snapshot()
        # Nothing of the refused writes is visible, nothing stored is harmed, no partial snapshot is left.
        assert _counts(shard) == _counts_of(before_stats)
        _, missing = shard.get([item.id for item in refused], include_vectors=False)
        assert len(missing) == len(refused)
        hits = shard.search(SearchQuery(vector=refused[0].vector, k=5, exact=True)).hits
        assert refused[0].id not in {hit.id for hit in hits}
        _assert_intact(shard, stored)
        assert _snapshot_files(shard.directory) == before_files
        # The background pass fails the same way without raising and leaves the same state behind.
        wait_for(shard.snapshot_due, 10, "the background snapshot to fall due")
        failed_snapshots = _write_errors("snapshot")
        shard.maintain()
        assert _write_errors("snapshot") == failed_snapshots + 1
        assert _snapshot_files(shard.directory) == before_files
        assert shard.stats().snapshot_version == before_stats.snapshot_version

        (mnt / "filler").unlink()
        shard.upsert(MODEL, refused)
        stored.update((item.id, item) for item in refused)
        deleted, _ = shard.delete(["item-0", "item-1"])
        assert deleted == 2
        del stored["item-0"], stored["item-1"]
        shard.maintain()
        assert shard.stats().snapshot_version == shard.stats().version
        _assert_intact(shard, stored)
        shard.close(snapshot=False)
        assert integrity(shard.directory / "store.sqlite3") == "ok"

        reopened = open_shard(mnt)
        try:
            assert reopened.stats().count == len(stored)
            _assert_intact(reopened, stored)
        finally:
            reopened.close(snapshot=False)


def test_disk_full_errors_are_recognised_and_answered_with_resource_exhausted(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "mnt", 1 * MiB) as mnt:
        fill(mnt / "filler")
        with pytest.raises(OSError) as no_space:
            (mnt / "more").write_bytes(b"\0" * 65536)
        conn = sqlite3.connect(mnt / "db.sqlite3")
        try:
            with pytest.raises(sqlite3.OperationalError) as sqlite_full:
                conn.execute("CREATE TABLE t (b BLOB)")
                conn.execute("INSERT INTO t VALUES (zeroblob(65536))")
                conn.commit()
        finally:
            conn.close()
    assert is_disk_full(no_space.value) and is_disk_full(sqlite_full.value)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert status_code_for(StorageFullError("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
