"""The gateway's write path into the replicated log, against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crossmodal.logserver import LogServer
from crossmodal.v1 import index_pb2
from services.common import writelog
from services.common.config import ConfigError, load_config
from services.common.placement import Placement
from services.gateway.config import GatewayConfig
from services.gateway.writer import LogWriter
from tests.support import ROOT

PLACEMENT = Placement(shards=2, partitions=8)


@pytest.fixture()
def nats(tmp_path: Path) -> Iterator[LogServer]:
    """A one-node JetStream server on a free loopback port."""
    server = LogServer(tmp_path / "log").start()
    try:
        yield server
    finally:
        server.stop()


def _item(n: int) -> index_pb2.IndexItem:
    return index_pb2.IndexItem(
        id=f"item {n}.*>", vector=[float(n), 1.0, 0.5], modality=2, metadata={"n": str(n)}, tags=["t"]
    )


async def _writer(url: str, max_bytes: int = -1) -> tuple[LogWriter, object]:
    nc = await writelog.connect(writelog.LogConfig(url=url, timeout_seconds=2.0), "test")
    js = nc.jetstream(timeout=2.0)
    layout = await writelog.ensure_stream(js, "CROSSMODAL", PLACEMENT, replicas=1, max_bytes=max_bytes)
    return LogWriter(js, layout, "model-a", timeout=2.0), nc


async def _messages(writer: LogWriter) -> int:
    """Messages held by all of the log's partition streams."""
    partitions = range(PLACEMENT.partitions or 0)
    infos = [await writer.js.stream_info(writer.layout.stream_of(p)) for p in partitions]
    return sum(info.state.messages for info in infos)


def test_replicas_without_a_log_are_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="CROSSMODAL_LOG_URL"):
        load_config(GatewayConfig, {"CROSSMODAL_GATEWAY_SHARDS": "127.0.0.1:1,127.0.0.1:2"})
    # The real process says why and how to fix it, and exits 2 like every configuration error.
    run = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CROSSMODAL_GATEWAY_SHARDS": "127.0.0.1:1,127.0.0.1:2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "CROSSMODAL_LOG_URL" in run.stderr and "crossmodal up --replicas 2" in run.stderr
    # One replica per shard needs no log; more than one with a log is fine.
    load_config(GatewayConfig, {"CROSSMODAL_GATEWAY_SHARDS": "127.0.0.1:1;127.0.0.1:2"})
    config = load_config(
        GatewayConfig, {"CROSSMODAL_GATEWAY_SHARDS": "127.0.0.1:1,127.0.0.1:2", "CROSSMODAL_LOG_URL": "nats://x:4222"}
    )
    assert config.placement == Placement(shards=1, partitions=64)


def test_items_and_deletes_are_acknowledged_with_their_log_positions(nats: LogServer) -> None:
    async def scenario() -> None:
        writer, nc = await _writer(nats.url)
        items = [_item(n) for n in range(20)]
        outcomes = await writer.upsert(0, items)
        assert all(o.error is None and o.position is not None for o in outcomes)
        positions = [o.position for o in outcomes if o.position is not None]
        assert [p.partition for p in positions] == [PLACEMENT.partition_of(i.id) for i in items]
        # Sequences count per partition (one stream each): 1, 2, ... in each.
        for partition in set(p.partition for p in positions):
            in_partition = [p.sequence for p in positions if p.partition == partition]
            assert sorted(in_partition) == list(range(1, len(in_partition) + 1))
        # What a replica will read back: the whole item, on its partition, with the model it was encoded by.
        for item, position in zip(items, positions, strict=True):
            stream = writer.layout.stream_of(position.partition)
            last = await writer.js.get_last_msg(stream, writer.layout.subject(item.id))
            write = writelog.decode(last.subject or "", last.seq or 0, last.data or b"")
            assert (write.op, write.item, write.model_id) == (writelog.UPSERT, item, "model-a")
            assert (write.partition, write.sequence) == (position.partition, position.sequence)
        # A re-sent id replaces the item: the stream keeps one message per item.
        await writer.upsert(0, [_item(3)])
        assert await _messages(writer) == 20
        # Deletes are tombstones; only ids whose latest write stored them count as deleted.
        deleted = await writer.delete([items[0].id, items[1].id, items[1].id, "never written"])
        assert deleted.deleted == 2 and len(deleted.positions) == 3
        assert (await writer.delete([items[0].id])).deleted == 0
        await nc.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_full_log_refuses_writes_and_keeps_what_it_stored(nats: LogServer) -> None:
    async def scenario() -> None:
        writer, nc = await _writer(nats.url, max_bytes=8 * 1024)
        stored = refused = 0
        for n in range(200):
            (outcome,) = await writer.upsert(0, [_item(n)])
            if outcome.error is None:
                stored += 1
            else:
                assert outcome.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.error.message
                assert "write log is full" in outcome.error.message
                refused += 1
        assert stored > 0 and refused > 0
        assert await _messages(writer) == stored  # nothing stored was dropped to make room
        await nc.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_an_unreachable_log_gives_a_retryable_status(nats: LogServer) -> None:
    async def scenario() -> None:
        writer, nc = await _writer(nats.url)
        nats.kill()
        (outcome,) = await writer.upsert(0, [_item(1)])
        assert outcome.error is not None and outcome.error.code == grpc.StatusCode.UNAVAILABLE
        assert "retry" in outcome.error.message
        await nc.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_log_made_for_another_partition_count_is_refused(nats: LogServer) -> None:
    async def scenario() -> None:
        writer, nc = await _writer(nats.url)
        with pytest.raises(ValueError, match="partition count is fixed once the log exists"):
            await writelog.ensure_stream(writer.js, "CROSSMODAL", Placement(shards=2, partitions=16), 1, -1)
        # Another shard count is no mismatch: the partition map says which shard owns what (issue 19), and the
        # layout keeps the shard count the log was created for, the first map's.
        layout = await writelog.ensure_stream(writer.js, "CROSSMODAL", Placement(shards=4, partitions=8), 1, -1)
        assert layout.placement == PLACEMENT
        await nc.close()  # type: ignore[attr-defined]

    asyncio.run(scenario())
