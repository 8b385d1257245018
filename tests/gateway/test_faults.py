"""Replica failover and slow shards, against real processes.

A whole shard killed during searches, and kill -9 during ingests, are tested in tests/faults/; API keys,
rate limits and TLS in tests/security/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crossmodal.client import Client, Item
from crossmodal.cluster import LocalCluster
from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc
from tests.gateway.conftest import cluster_spec, ingest_readable
from tests.reliability import record
from tests.support import ServiceProcess, wait_for


@pytest.fixture()
def small_cluster(tmp_path: Path, bundle_dir: Path) -> Iterator[LocalCluster]:
    """A fresh 2 x 2 cluster with 30 texts, for tests that kill processes."""
    with LocalCluster(cluster_spec(tmp_path / "c", bundle_dir, CROSSMODAL_GATEWAY_HEDGE_DELAY_MS="50")) as running:
        acks = ingest_readable(running, [Item(f"t{i}", text=f"caption number {i}") for i in range(30)])
        assert all(a.ok for a in acks)
        yield running


def test_a_stopped_replica_is_failed_over(small_cluster: LocalCluster) -> None:
    with Client(small_cluster.address) as client:
        small_cluster.kill("index-0-0")
        for _ in range(5):
            result = client.search("caption number 7", k=30, require_complete=True)
            assert result.partial_shards == [] and len(result.hits) == 30
        # Writes go through the log: a dead replica does not stop them, and it is not named as failing.
        ids = [f"new{i}" for i in range(12)]
        acks = list(client.ingest(Item(i, text=i) for i in ids))
        assert {a.shard for a in acks} == {0, 1}
        assert all(a.ok and a.failed_replicas == [] and a.position is not None for a in acks)
        stats = client.stats()
        assert [r.healthy for r in stats.shards[0]] == [False, True]
        # Restarted on its port, the replica catches up from the log and is used again with no action on the
        # gateway: with the other replica of shard 0 dead, every new write is found on it.
        small_cluster.restart("index-0-0")
        small_cluster.kill("index-0-1")
        # The gateway reconnects to the restarted replica within about a second (bounded poll).
        wait_for(lambda: _readable(client, ids), 30, "the restarted replica to answer")
        found, missing = client.get(ids)
        assert missing == [] and len(found) == 12


def _readable(client: Client, ids: list[str]) -> bool:
    """Whether a Get of `ids` is answered (by any replica)."""
    try:
        client.get(ids, timeout=5)
    except grpc.RpcError:
        return False
    return True


def test_a_slow_shard_is_skipped_within_the_deadline(tmp_path: Path, bundle_dir: Path) -> None:
    spec = cluster_spec(tmp_path / "c", bundle_dir, shards=2, replicas=1, CROSSMODAL_GATEWAY_SEARCH_TIMEOUT_MS="400")
    with LocalCluster(spec) as running:
        with Client(running.address) as client:
            assert all(a.ok for a in client.ingest(Item(f"t{i}", text=f"caption {i}") for i in range(10)))
        slow = running.by_name("index-1-0")
        slow.proc.terminate()  # type: ignore[union-attr]
        slow.proc.wait(30)  # type: ignore[union-attr]
        # Restart shard 1 with a 3 s delay on every search, on the same port and data.
        env = {k: v for k, v in slow.env.items() if k.startswith("CROSSMODAL_INDEX_")}
        env.update(
            CROSSMODAL_PORT=str(slow.port), CROSSMODAL_FAULT_DELAY_MS="3000", CROSSMODAL_FAULT_METHODS="SearchShard"
        )
        restarted = ServiceProcess("services.index", tmp_path / "slow", env).wait_ready()
        try:
            with Client(running.address) as client:
                started = time.monotonic()
                result = client.search("caption 3", k=10, timeout=10)
                elapsed = time.monotonic() - started
            assert result.partial_shards == [1]
            # Answered after the 0.4 s shard deadline, well before the 3 s the slow shard takes.
            assert elapsed < 2.5, elapsed
            record(
                "faults",
                "slow shard",
                "one of 2 shards restarted with a 3 s delay on every search; gateway shard deadline 400 ms",
                f"answered in {elapsed:.2f} s with partial=[1], not after the slow shard's 3 s",
            )
        finally:
            restarted.terminate()


def test_stats_ask_every_replica_within_the_callers_deadline(tmp_path: Path, bundle_dir: Path) -> None:
    spec = cluster_spec(tmp_path / "c", bundle_dir, shards=1, replicas=2)
    with LocalCluster(spec) as running, Client(running.address) as client:
        assert all(a.ok for a in client.ingest(Item(f"t{i}", text=f"caption {i}") for i in range(10)))
        slow = running.by_name("index-0-0")
        slow.proc.terminate()  # type: ignore[union-attr]
        slow.proc.wait(30)  # type: ignore[union-attr]
        # Writes go on through the log while it is down.
        assert all(a.ok for a in client.ingest(Item(f"u{i}", text=f"later caption {i}") for i in range(5)))
        # Back on its port, answering GetShardStats only after 2.5 s (beyond the old fixed 2 s timeout).
        env = {k: v for k, v in slow.env.items() if k.startswith(("CROSSMODAL_INDEX_", "CROSSMODAL_LOG_"))}
        env.update(
            CROSSMODAL_PORT=str(slow.port),
            CROSSMODAL_FAULT_DELAY_MS="2500",
            CROSSMODAL_FAULT_METHODS="GetShardStats",
        )
        restarted = ServiceProcess("services.index", tmp_path / "slow", env).wait_ready()
        try:
            # The gateway reconnects within about a second of the restart (bounded poll).
            deadline = time.monotonic() + 30
            while not (stats := client.stats(timeout=15)).shards[0][0].healthy and time.monotonic() < deadline:
                time.sleep(0.2)
            replicas = stats.shards[0]
            assert [r.healthy for r in replicas] == [True, True], replicas
            # It caught up from the log before it reported SERVING: both hold all 15, and the shard counts once.
            assert [r.count for r in replicas] == [15, 15]
            assert stats.total_count == 15
        finally:
            restarted.terminate()


def test_clients_that_abandon_their_streams_midway_never_take_the_gateway_down(scratch_cluster: LocalCluster) -> None:
    # The failed RPC's log line once read the caller's address from a call gRPC had already freed, which
    # crashed the gateway (a segfault in gRPC's peer()) after a client went away in the middle of a stream.
    gateway = scratch_cluster.by_name("gateway")
    abandoned = 30
    with grpc.insecure_channel(scratch_cluster.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for n in range(abandoned):
            release = threading.Event()

            def requests(n: int = n, release: threading.Event = release) -> Iterator[gateway_pb2.IngestRequest]:
                yield gateway_pb2.IngestRequest(id=f"abandoned-{n}", text=f"an abandoned stream {n}")
                release.wait(30)

            call = stub.Ingest(requests())
            assert next(call).id == f"abandoned-{n}"  # the handler is in the middle of the stream
            call.cancel()
            release.set()
            assert gateway.proc is not None and gateway.proc.poll() is None, gateway.tail()
    with Client(scratch_cluster.address) as client:
        found, missing = client.get([f"abandoned-{n}" for n in range(abandoned)])
        assert missing == [] and len(found) == abandoned
    assert gateway.proc.poll() is None, gateway.tail()
    record(
        "faults",
        "clients that abandon their streams",
        f"{abandoned} Ingest streams cancelled by their client after the first acknowledgement",
        "the gateway stayed up; every acknowledged item is stored",
    )
