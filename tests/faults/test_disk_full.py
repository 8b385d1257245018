"""Disk full on a shard's data directory: a real index process on a small tmpfs that runs out of space.

Writes must fail with RESOURCE_EXHAUSTED and a message naming the shard and its directory, reads and
searches go on, nothing acknowledged is damaged, snapshots fail without leaving partial files, writes
resume once space is freed (no restart), and after kill -9 every acknowledged item, and no other, is back.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from tests.index.tmpfs import fill, free_bytes, integrity, mounted_tmpfs
from tests.reliability import record
from tests.support import ServiceProcess, metric_value

MiB = 1 << 20
TMPFS_BYTES = 8 * MiB
DIM = 64
MODEL = "disk-full-model"
BATCH = 20
# Enough room for a few batches after the filler, so the first failures come from writes in progress.
LEAVE_BYTES = 256 * 1024
MAX_BATCHES = 500
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _item(prefix: str, i: int) -> index_pb2.IndexItem:
    """Item `prefix-i` with a vector seeded by its name and metadata that makes its row ~0.5 KiB."""
    seed = int.from_bytes(hashlib.sha256(f"{prefix}-{i}".encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return index_pb2.IndexItem(
        id=f"{prefix}-{i}",
        modality=types_pb2.MODALITY_IMAGE if i % 2 == 0 else types_pb2.MODALITY_TEXT,
        vector=vector.tolist(),
        metadata={"n": str(i), "set": prefix, "caption": f"{prefix} item {i} " + "x" * 160},
        tags=[f"t{i % 3}", prefix],
    )


def _items(prefix: str, start: int, n: int) -> list[index_pb2.IndexItem]:
    return [_item(prefix, i) for i in range(start, start + n)]


class Shard0:
    """The index process serving shard 0 out of the tmpfs, and a stub to it."""

    def __init__(self, workdir: Path, data_dir: Path) -> None:
        env = {
            "CROSSMODAL_INDEX_DATA_DIR": str(data_dir),
            "CROSSMODAL_INDEX_SHARDS": "0",
            "CROSSMODAL_INDEX_THREADS": "1",
            # Snapshots only when the test asks: the background pass would race with the assertions.
            "CROSSMODAL_INDEX_SNAPSHOT_INTERVAL_SECONDS": "3600",
        }
        self.proc = ServiceProcess("services.index", workdir, env).wait_ready()
        self.channel = self.proc.channel()
        self.stub = index_pb2_grpc.IndexServiceStub(self.channel)

    def alive(self) -> None:
        """Fail when the process has exited (it must never crash, whatever the disk does)."""
        assert self.proc.proc.poll() is None, f"the index process exited:\n{self.proc.log()}"

    def upsert(self, items: Sequence[index_pb2.IndexItem]) -> None:
        """Upsert and require every item acknowledged."""
        response = self.stub.UpsertVectors(
            index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=items), timeout=60
        )
        assert [s.code for s in response.statuses] == [0] * len(items)

    def refused(self, call: str, request: object) -> str:
        """Run a write that must fail with RESOURCE_EXHAUSTED; its details."""
        with pytest.raises(grpc.RpcError) as info:
            getattr(self.stub, call)(request, timeout=60)
        assert info.value.code() == RESOURCE_EXHAUSTED, info.value.details()
        return str(info.value.details())

    def close(self) -> None:
        """Close the channel and stop the process if it still runs."""
        self.channel.close()
        self.proc.close()


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for the test (unmounted after every process on it stopped)."""
    with mounted_tmpfs(tmp_path / "data", TMPFS_BYTES) as mount:
        yield mount


@pytest.fixture()
def running(data_dir: Path) -> Iterator[list[Shard0]]:
    """Index processes started by the test; all stopped in teardown, before the tmpfs is unmounted."""
    started: list[Shard0] = []
    yield started
    for shard in started:
        shard.close()


def _check_stored(shard: Shard0, stored: dict[str, index_pb2.IndexItem], absent: Sequence[str]) -> None:
    """Every stored item comes back exactly and is found by a search for its vector; `absent` ones do not."""
    ids = list(stored)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        got = shard.stub.GetVectors(index_pb2.GetVectorsRequest(shard=0, ids=chunk, include_vectors=True), timeout=60)
        assert list(got.missing) == []
        for item in got.items:
            want = stored[item.id]
            assert np.array_equal(np.asarray(item.vector, np.float32), np.asarray(want.vector, np.float32)), item.id
            assert (item.modality, dict(item.metadata), list(item.tags)) == (
                want.modality,
                dict(want.metadata),
                list(want.tags),
            )
    for start in range(0, len(absent), 500):
        chunk = list(absent[start : start + 500])
        got = shard.stub.GetVectors(index_pb2.GetVectorsRequest(shard=0, ids=chunk), timeout=60)
        assert sorted(got.missing) == sorted(chunk) and not got.items
    for item_id in ids[::10]:
        hits = shard.stub.SearchShard(
            index_pb2.SearchShardRequest(shard=0, vector=stored[item_id].vector, k=3, exact=True, model_id=MODEL),
            timeout=60,
        ).hits
        assert hits[0].id == item_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    count = shard.stub.GetShardStats(index_pb2.GetShardStatsRequest(), timeout=60).shards[0].count
    assert count == len(stored)


def _snapshot_files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("index-*"))}


def test_disk_full_refuses_writes_keeps_reads_and_resumes(
    tmp_path: Path, data_dir: Path, running: list[Shard0]
) -> None:
    started = time.monotonic()
    shard_dir = data_dir / "shard-0"
    shard = Shard0(tmp_path / "run-1", data_dir)
    running.append(shard)

    # Before: a first set, a set to delete later, and a recorded snapshot.
    stored: dict[str, index_pb2.IndexItem] = {}
    for start in range(0, 1000, 100):
        batch = _items("first", start, 100)
        shard.upsert(batch)
        stored.update((it.id, it) for it in batch)
    doomed = _items("doomed", 0, 300)
    shard.upsert(doomed)
    shard.stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=0), timeout=60)
    before_full = len(stored)
    snapshots = _snapshot_files(shard_dir)
    assert len(snapshots) == 1

    # Fill the disk, leaving a little room, and keep writing until the shard refuses.
    fill(data_dir / "filler", leave=LEAVE_BYTES)
    unacknowledged: list[str] = []
    message = ""
    for n in range(MAX_BATCHES):
        batch = _items("during", n * BATCH, BATCH)
        try:
            shard.upsert(batch)
        except grpc.RpcError as exc:
            assert exc.code() == RESOURCE_EXHAUSTED, exc.details()
            message = str(exc.details())
            unacknowledged = [it.id for it in batch]
            break
        stored.update((it.id, it) for it in batch)
    else:
        pytest.fail(f"{MAX_BATCHES} batches of {BATCH} items fitted in {LEAVE_BYTES} bytes")
    during_full = len(stored) - before_full
    assert "shard 0" in message and str(shard_dir) in message and "is full" in message
    assert "free space" in message and "retry" in message
    shard.alive()

    # Not a byte left now: every write needing new space fails the same way, and cleanly.
    fill(data_dir / "filler-2")
    assert free_bytes(data_dir) == 0
    big = _items("big", 0, 300)
    shard.refused("UpsertVectors", index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=big))
    unacknowledged += [it.id for it in big]
    shard.refused("DeleteVectors", index_pb2.DeleteVectorsRequest(shard=0, ids=[it.id for it in doomed]))
    snapshot_message = shard.refused("CreateSnapshot", index_pb2.CreateSnapshotRequest(shard=0))
    assert str(shard_dir) in snapshot_message and "is full" in snapshot_message
    assert _snapshot_files(shard_dir) == snapshots, "a failed snapshot left a file or touched the recorded one"

    # Reads go on: every acknowledged item intact, the refused ones nowhere, health still SERVING.
    stored.update((it.id, it) for it in doomed)
    _check_stored(shard, stored, unacknowledged)
    health = health_pb2_grpc.HealthStub(shard.channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    metrics = shard.proc.metrics()
    for op, least in (("upsert", 2), ("delete", 1), ("snapshot", 1)):
        value = metric_value(metrics, "crossmodal_index_write_errors_total", shard="0", op=op, reason="disk_full")
        assert value >= least, (op, value)
    assert "write refused: the shard's disk is full" in shard.proc.log()
    shard.alive()

    # Space freed: writes, deletes and snapshots work again in the same process.
    (data_dir / "filler").unlink()
    (data_dir / "filler-2").unlink()
    after = _items("after", 0, 200)
    shard.upsert(after)
    stored.update((it.id, it) for it in after)
    deleted = shard.stub.DeleteVectors(index_pb2.DeleteVectorsRequest(shard=0, ids=[it.id for it in doomed]))
    assert deleted.deleted == len(doomed)
    for it in doomed:
        del stored[it.id]
    shard.stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=0), timeout=60)
    late = _items("late", 0, 100)  # newer than the snapshot: the restart replays it from the store
    shard.upsert(late)
    stored.update((it.id, it) for it in late)
    gone = unacknowledged + [it.id for it in doomed]
    _check_stored(shard, stored, gone)
    shard.alive()

    # kill -9 and restart on the same directory: exactly the acknowledged items are there.
    assert shard.proc.kill() == -9
    shard.channel.close()
    restarted = Shard0(tmp_path / "run-2", data_dir)
    running.append(restarted)
    _check_stored(restarted, stored, gone)
    restarted.channel.close()
    assert restarted.proc.terminate() == 0
    assert not list(shard_dir.glob("*.tmp"))
    assert integrity(shard_dir / "store.sqlite3") == "ok"
    seconds = time.monotonic() - started

    record(
        "faults",
        "disk full on a shard's data directory",
        f"8 MiB tmpfs as the data directory; {before_full + len(doomed):,} items stored, then a filler file "
        f"left 256 KiB and {during_full:,} more items were acknowledged before writes failed; then 0 bytes free "
        f"for a 300-item upsert, a 300-id delete and a snapshot; then the filler deleted, writes resumed, "
        f"kill -9 and restart",
        f"every write on the full disk got RESOURCE_EXHAUSTED naming the shard and its directory; reads, "
        f"searches and health (SERVING) answered; {len(stored):,}/{len(stored):,} acknowledged items intact "
        f"after the restart and none of the {len(unacknowledged):,} refused ones present; no partial snapshot; "
        f"writes resumed without a restart; integrity_check ok; no crash ({seconds:.0f} s)",
    )
