"""The index service in this process on a real gRPC server (port 0): snapshots on request, and stopping.

In-process rather than a subprocess because these tests inject a fault into a live shard (a graph
update that fails after its commit, a call that blocks) and watch the event loop while it happens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from services.common.config import ServerConfig
from services.common.server import RunningServer, start_server
from services.index import shard as shard_module
from services.index.config import IndexConfig
from services.index.domain import ShardStats
from services.index.service import IndexService

DIM = 16
MODEL = "lifecycle-model"


def config(data_dir: Path) -> IndexConfig:
    """Shards 0 (written by the tests) and 1 (left empty) on a free loopback port; no background snapshots."""
    return IndexConfig(
        server=ServerConfig(host="127.0.0.1", port=0, metrics_port=-1),
        data_dir=data_dir,
        shards=(0, 1),
        threads=1,
        workers=2,
        snapshot_interval_seconds=3600.0,
    )


def proto_items(start: int, stop: int) -> list[index_pb2.IndexItem]:
    """Items `it-start` .. `it-(stop - 1)` with vectors seeded by their number."""
    items = []
    for i in range(start, stop):
        x = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
        items.append(index_pb2.IndexItem(id=f"it-{i}", modality=types_pb2.MODALITY_TEXT, vector=x.tolist()))
    return items


def rebuilds(reason: str) -> float:
    """How often shard 0 was rebuilt for `reason` in this process so far."""
    value = REGISTRY.get_sample_value("crossmodal_index_rebuilds_total", {"shard": "0", "reason": reason})
    return value or 0.0


async def poll(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    """Await until `predicate` holds, for at most `timeout` seconds (then fail)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {message}")
        await asyncio.sleep(0.01)


async def serve(service: IndexService) -> RunningServer:
    """Start the gRPC server and the service, as `services.common.server.serve` does."""
    running = await start_server(service, service.config.server)
    await service.start()
    await running.set_serving(True)
    return running


@pytest.fixture
def failing_graph_updates(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """A switch that makes every graph insert fail after its store commit (as a USearch error would)."""
    real = shard_module.unit_rows

    def switch(on: bool) -> None:
        if on:

            def fail(vectors: np.ndarray) -> np.ndarray:
                raise RuntimeError("injected: USearch could not grow the graph")

            monkeypatch.setattr(shard_module, "unit_rows", fail)
        else:
            monkeypatch.setattr(shard_module, "unit_rows", real)

    return switch


def test_create_snapshot_writes_one_or_answers_why_not(
    tmp_path: Path, failing_graph_updates: Callable[[bool], None]
) -> None:
    """Bug: CreateSnapshot answered OK with the current version while no snapshot had been written."""
    service = IndexService(config(tmp_path / "data"))

    async def main() -> None:
        running = await serve(service)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)

            # An empty shard has nothing to save, and says so instead of reporting a snapshot.
            with pytest.raises(grpc.aio.AioRpcError) as empty:
                await stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=1))
            assert empty.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no vectors yet" in (empty.value.details() or "")

            await stub.UpsertVectors(index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=proto_items(0, 50)))
            # A graph update fails after its commit: the write is durable, the graph is behind and
            # untrusted until it is rebuilt.
            failing_graph_updates(True)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.UpsertVectors(
                    index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=proto_items(50, 60))
                )
            assert failed.value.code() == grpc.StatusCode.INTERNAL
            failing_graph_updates(False)
            recoveries = rebuilds("recovery")

            written = await stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=0))
            (stats,) = [s for s in (await stub.GetShardStats(index_pb2.GetShardStatsRequest())).shards if s.shard == 0]
            # The answer names a snapshot that exists and covers every committed write.
            assert written.version == stats.version == stats.snapshot_version == 2
            assert 0 <= stats.snapshot_age_seconds < 60
            assert rebuilds("recovery") == recoveries + 1
            (snapshot,) = list((tmp_path / "data" / "shard-0").glob("index-*.usearch"))
            assert snapshot.name.startswith(f"index-{written.version:016d}-")
            late = proto_items(55, 56)[0]
            hits = (await stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=late.vector, k=1))).hits
            assert hits[0].id == "it-55"
        await running.drain(1)
        await service.stop()

    asyncio.run(main())


class Gate:
    """Holds worker threads until opened, and records who opened it: the event loop or a fallback timer."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened_by: list[str] = []

    def wait(self) -> None:
        """Block the calling thread until the gate opens (at most 30 s)."""
        self.entered.set()
        self.opened.wait(30)

    def open(self, by: str) -> None:
        """Let the held threads go, once."""
        if not self.opened.is_set():
            self.opened_by.append(by)
            self.opened.set()


def test_stop_keeps_the_event_loop_running_while_a_call_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: stop() waited for the worker threads on the event loop, freezing it until the last call ended."""
    service = IndexService(config(tmp_path / "data"))
    gate, closed = Gate(), threading.Event()

    async def main() -> None:
        running = await serve(service)
        shard = service.shards.get(0)
        real_stats, real_close = shard.stats, shard.close

        def slow_stats() -> ShardStats:
            gate.wait()
            return real_stats()

        def close(snapshot: bool = True) -> None:
            real_close(snapshot)
            closed.set()

        monkeypatch.setattr(shard, "stats", slow_stats)
        monkeypatch.setattr(shard, "close", close)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)
            call = asyncio.ensure_future(stub.GetShardStats(index_pb2.GetShardStatsRequest()))
            await poll(gate.entered.is_set, 30, "the slow call to reach its worker thread")
            # The call outlives the drain: its thread goes on after the server stopped.
            await running.drain(0)
            # Only a frozen loop lets this fire: it unblocks the call so that the test ends either way.
            fallback = threading.Timer(5.0, gate.open, args=("timer",))
            fallback.start()
            stopping = asyncio.ensure_future(service.stop())
            await poll(closed.is_set, 30, "the shards to close")
            # stop() now waits for the worker threads; the loop must go on running meanwhile.
            for _ in range(5):
                await asyncio.sleep(0.01)
            assert not gate.opened.is_set(), "the event loop froze while stop() waited for the worker threads"
            assert not stopping.done(), "stop() returned while a call was still running on a worker thread"
            gate.open("loop")
            await asyncio.wait_for(stopping, 30)
            fallback.cancel()
            with pytest.raises(grpc.aio.AioRpcError):
                await call

    asyncio.run(main())
    assert gate.opened_by == ["loop"]
