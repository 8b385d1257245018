"""The gateway's coalescing of concurrent searches: a unit test of the Coalescer with a controlled backend,
and the real path through gRPC: an index process answering SearchShardBatch, one that predates it, and a
cluster whose encoders take few texts per call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from crossmodal.client import Client, Item
from crossmodal.cluster import ClusterSpec, LocalCluster
from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from services.common.config import load_config
from services.gateway.backends import Backends, EncoderPool, ShardClient
from services.gateway.coalesce import Coalescer
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError
from services.gateway.search import Searcher
from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture
from tests.support import ServiceProcess, metric_value, metrics_text


class Backend:
    """A backend whose calls finish when the test says so; it records every batch it was sent."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def send(self, queries: list[int], timeout: float) -> Sequence[int | BaseException]:
        self.batches.append(list(queries))
        await self.release.wait()
        return [ValueError(f"no {q}") if q < 0 else q * 10 for q in queries]


def test_a_lone_query_goes_at_once_and_queued_ones_go_together() -> None:
    async def scenario() -> None:
        backend = Backend()
        lane: Coalescer[int, int] = Coalescer("test", backend.send, in_flight=1, max_batch=3)
        first = asyncio.ensure_future(lane.submit(1, 5))
        for _ in range(3):  # the caller's task, then the call's task: no timer is involved
            await asyncio.sleep(0)
        assert backend.batches == [[1]]
        queued = [asyncio.ensure_future(lane.submit(q, 5)) for q in (2, -3, 4, 5)]
        await asyncio.sleep(0.01)
        assert backend.batches == [[1]]  # one call in flight: the others wait for it
        backend.release.set()
        assert await first == 10
        assert await queued[0] == 20
        with pytest.raises(ValueError, match="no -3"):  # one query's failure is its own
            await queued[1]
        assert [await q for q in queued[2:]] == [40, 50]
        assert backend.batches == [[1], [2, -3, 4], [5]]  # at most max_batch per call

    asyncio.run(scenario())


def test_a_failed_call_fails_its_queries_and_a_timed_out_query_is_not_sent() -> None:
    async def scenario() -> None:
        sent: list[list[int]] = []
        gate = asyncio.Event()

        async def send(queries: list[int], timeout: float) -> Sequence[int]:
            sent.append(list(queries))
            await gate.wait()
            raise ConnectionError("backend down")

        lane: Coalescer[int, int] = Coalescer("test", send, in_flight=1, max_batch=8)
        busy = asyncio.ensure_future(lane.submit(1, 5))
        await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            await lane.submit(2, 0.05)  # queued behind the call in flight, and given up on
        waiting = asyncio.ensure_future(lane.submit(3, 5))
        await asyncio.sleep(0.01)
        gate.set()
        with pytest.raises(ConnectionError):
            await busy
        with pytest.raises(ConnectionError):
            await waiting
        assert sent == [[1], [3]]

    asyncio.run(scenario())


DIM = 8
MODEL = "coalesce-model"


def unit(seed: int) -> list[float]:
    """A deterministic unit vector."""
    x = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (x / np.linalg.norm(x)).tolist()


class OldIndex(index_pb2_grpc.IndexServiceServicer):
    """An index service of a release before SearchShardBatch: it answers SearchShard only."""

    def __init__(self) -> None:
        self.calls = 0

    async def SearchShard(
        self, request: index_pb2.SearchShardRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.SearchShardResponse:
        """One hit named after the query's k."""
        self.calls += 1
        return index_pb2.SearchShardResponse(hits=[index_pb2.SearchHit(id=f"k{request.k}", score=0.5)])


def searcher_for(address: str, in_flight: int = 1) -> tuple[Searcher, ShardClient]:
    """A Searcher over one shard at `address` (call it on the running loop; no encoder is called)."""
    env = {
        "CROSSMODAL_GATEWAY_SHARDS": address,
        "CROSSMODAL_GATEWAY_COALESCE_IN_FLIGHT": str(in_flight),
        "CROSSMODAL_GATEWAY_HEDGE_DELAY_MS": "0",
    }
    config = load_config(GatewayConfig, env)
    shard = ShardClient(0, [address], tls=None, max_message_bytes=1 << 20)
    unused = EncoderPool("text", ["127.0.0.1:9"], tls=None, max_message_bytes=1 << 20)  # searches by vector only
    backends = Backends(unused, unused, [shard], config.placement, model_id=MODEL, dim=DIM)
    return Searcher(config, backends), shard


def test_searches_through_a_real_index_are_batched_and_answered_as_alone(tmp_path: Path) -> None:
    proc = ServiceProcess("services.index", tmp_path, {"CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "data")})
    proc.wait_ready()
    try:
        stub = index_pb2_grpc.IndexServiceStub(proc.channel())
        items = [index_pb2.IndexItem(id=f"i{n}", modality=types_pb2.MODALITY_TEXT, vector=unit(n)) for n in range(50)]
        stub.UpsertVectors(index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=items), timeout=30)
        requests = [index_pb2.SearchShardRequest(shard=0, vector=unit(n), k=3, model_id=MODEL) for n in range(20)]
        requests.append(index_pb2.SearchShardRequest(shard=0, vector=unit(1)[:4], k=3, model_id=MODEL))
        alone = [stub.SearchShard(r, timeout=30) for r in requests[:-1]]

        async def scenario() -> list[object]:
            searcher, shard = searcher_for(proc.address)
            try:
                return await asyncio.gather(
                    *(searcher._ask(shard, r, 10, ()) for r in requests), return_exceptions=True
                )
            finally:
                await shard.close()

        answers = asyncio.run(scenario())
        assert answers[:-1] == [list(a.hits) for a in alone]
        bad = answers[-1]
        assert (
            isinstance(bad, GatewayError) and bad.code == grpc.StatusCode.INVALID_ARGUMENT and "4 values" in bad.message
        )
        batches = metric_value(proc.metrics(), "crossmodal_rpc_requests_total", code="OK", method="SearchShardBatch")
        assert batches >= 1  # 21 concurrent searches did not take 21 calls
    finally:
        proc.terminate()
        proc.close()


def test_a_shard_without_search_batches_is_searched_one_query_per_call() -> None:
    async def scenario() -> None:
        old = OldIndex()
        server = grpc.aio.server()
        index_pb2_grpc.add_IndexServiceServicer_to_server(old, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        searcher, shard = searcher_for(f"127.0.0.1:{port}")
        try:
            requests = [index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=k) for k in range(1, 9)]
            answers = await asyncio.gather(*(searcher._ask(shard, r, 10, ()) for r in requests))
            assert [[h.id for h in a] for a in answers] == [[f"k{k}"] for k in range(1, 9)]
            assert shard.batch_unsupported and old.calls == 8
        finally:
            await shard.close()
            await server.stop(0)

    asyncio.run(scenario())


def test_coalesced_text_queries_never_exceed_what_the_encoder_takes_in_one_call(
    tmp_path: Path,
    bundle_dir: Path,  # noqa: F811
) -> None:
    # Encoders that take two texts per call: the gateway learns it from GetModelInfo at start.
    spec = ClusterSpec.on_free_ports(
        tmp_path / "c", shards=1, replicas=1, bundle=bundle_dir, env={"CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS": "2"}
    )
    with LocalCluster(spec) as cluster, Client(cluster.address) as client:
        acks = list(client.ingest(Item(f"c{n}", text=f"a caption number {n}") for n in range(8)))
        assert all(a.ok for a in acks)
        with ThreadPoolExecutor(24) as pool:
            found = list(pool.map(lambda n: client.search(f"a caption number {n % 8}", k=3), range(240)))
        assert all(len(r.hits) == 3 and not r.partial_shards for r in found)
        metrics = metrics_text(cluster.by_name("gateway").metrics_port)
        count = metric_value(metrics, "crossmodal_gateway_coalesced_batch_size_count", backend="text_encoder")
        total = metric_value(metrics, "crossmodal_gateway_coalesced_batch_size_sum", backend="text_encoder")
        within_two = metric_value(
            metrics, "crossmodal_gateway_coalesced_batch_size_bucket", backend="text_encoder", le="2.0"
        )
        assert total > count  # searches did share calls
        assert within_two == count  # and none carried more than two texts
