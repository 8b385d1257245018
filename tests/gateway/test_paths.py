"""The gateway's search path in process, over a real index process holding two shards.

What a shard failure becomes is decided in `services/gateway/search.py`: a shard that cannot answer in
time is a partial answer; a shard's refusal is the caller's error; anything else is a bug in the gateway
and must be reported as INTERNAL, not disguised as an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from crossmodal.v1 import gateway_pb2, index_pb2, index_pb2_grpc, types_pb2
from services.common.config import load_config
from services.common.placement import Placement
from services.gateway.backends import Backends, ShardClient
from services.gateway.config import GatewayConfig
from services.gateway.errors import BackendError, status_of
from services.gateway.search import Searcher
from tests.support import ServiceProcess

DIM = 8


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One index process serving shards 0 and 1, each holding four vectors."""
    work = tmp_path_factory.mktemp("index")
    process = ServiceProcess(
        "services.index", work, {"CROSSMODAL_INDEX_DATA_DIR": str(work / "data"), "CROSSMODAL_INDEX_SHARDS": "0,1"}
    ).wait_ready()
    rng = np.random.default_rng(5)
    with grpc.insecure_channel(process.address) as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        for shard in (0, 1):
            items = [
                index_pb2.IndexItem(
                    id=f"s{shard}-{i}", vector=rng.standard_normal(DIM).tolist(), modality=types_pb2.MODALITY_TEXT
                )
                for i in range(4)
            ]
            reply = stub.UpsertVectors(index_pb2.UpsertVectorsRequest(shard=shard, model_id="m", items=items))
            assert all(s.code == 0 for s in reply.statuses)
    try:
        yield process
    finally:
        process.terminate()


def _search(index: ServiceProcess, broken: dict[int, BaseException]) -> gateway_pb2.SearchResponse:
    """One search through a Searcher whose read of the shards in `broken` raises the given error."""

    async def scenario() -> gateway_pb2.SearchResponse:
        config = load_config(GatewayConfig, {})
        shards = [ShardClient(n, [index.address], tls=None, max_message_bytes=1 << 22) for n in (0, 1)]
        real_read = ShardClient.read

        async def read(self: ShardClient, *args: Any) -> Any:
            reply = await real_read(self, *args)
            if self.number in broken:
                raise broken[self.number]
            return reply

        ShardClient.read = read  # type: ignore[method-assign]
        try:
            searcher = Searcher(config, Backends(None, None, shards, Placement(2), model_id="m", dim=DIM))  # type: ignore[arg-type]
            request = gateway_pb2.SearchRequest(vector=gateway_pb2.QueryVector(values=[1.0] * DIM), k=8)
            return await searcher.search(request, remaining=None)
        finally:
            ShardClient.read = real_read  # type: ignore[method-assign]
            for shard in shards:
                await shard.close()

    return asyncio.run(scenario())


def test_both_shards_answer(index: ServiceProcess) -> None:
    reply = _search(index, {})
    assert len(reply.results) == 8 and list(reply.partial_shards) == []


def test_a_shard_that_cannot_answer_makes_the_answer_partial(index: ServiceProcess) -> None:
    reply = _search(index, {1: BackendError(grpc.StatusCode.UNAVAILABLE, "shard 1 did not answer")})
    assert list(reply.partial_shards) == [1]
    assert sorted(r.id for r in reply.results) == [f"s0-{i}" for i in range(4)]


def test_a_bug_in_a_shard_search_is_internal_not_an_outage(index: ServiceProcess) -> None:
    with pytest.raises(TypeError) as info:
        _search(index, {1: TypeError("unsupported operand")})
    code, message = status_of(info.value)
    assert code == grpc.StatusCode.INTERNAL
    assert "TypeError" in message and "logged" in message
