"""Load shedding at the gateway: searches and ingest streams beyond their limits get RESOURCE_EXHAUSTED at once."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crossmodal.client import Client, Item
from crossmodal.cluster import LocalCluster
from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2
from tests.gateway.conftest import cluster_spec
from tests.support import metrics_text

SEARCH_LIMIT = 2
# Admitted searches are held this long by the test-only fault delay, so they still hold their slots
# while the test sees the gauge at the limit and sends the extra ones; it bounds nothing else.
HOLD_MS = 5000


def metric(cluster: LocalCluster, name: str, method: str) -> float:
    """The value of one gateway metric sample labelled with `method` (0 when absent)."""
    assert cluster.gateway is not None
    text = metrics_text(cluster.gateway.metrics_port)
    found = re.search(rf'^{name}\{{method="{method}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for_gauge(cluster: LocalCluster, method: str, value: float, timeout: float = 30.0) -> None:
    """Poll the admitted-in-flight gauge until it reads `value` (bounded)."""
    deadline = time.monotonic() + timeout
    while (seen := metric(cluster, "crossmodal_gateway_admitted_in_flight", method)) != value:
        assert time.monotonic() < deadline, f"{method} in flight stayed at {seen}, expected {value}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[LocalCluster]:
    """A one-shard cluster whose gateway admits 2 searches and 1 ingest stream, with slow searches."""
    spec = cluster_spec(
        tmp_path_factory.mktemp("admission"),
        bundle_dir,
        shards=1,
        replicas=1,
        CROSSMODAL_GATEWAY_MAX_IN_FLIGHT_SEARCHES=str(SEARCH_LIMIT),
        CROSSMODAL_GATEWAY_MAX_INGEST_STREAMS="1",
        CROSSMODAL_FAULT_DELAY_MS=str(HOLD_MS),
        CROSSMODAL_FAULT_METHODS="Search",
    )
    with LocalCluster(spec) as running:
        with Client(running.address) as client:
            acks = list(client.ingest([Item("a", text="a red circle"), Item("b", text="a blue square")]))
        assert all(a.ok for a in acks), acks
        yield running


def test_searches_beyond_the_limit_are_shed_and_the_admitted_ones_succeed(limited: LocalCluster) -> None:
    request = gateway_pb2.SearchRequest(text="a red circle", k=2, target=types_pb2.MODALITY_TEXT)
    shed_before = metric(limited, "crossmodal_gateway_shed_requests_total", "Search")
    with grpc.insecure_channel(limited.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        admitted = [stub.Search.future(request, timeout=60) for _ in range(SEARCH_LIMIT)]
        wait_for_gauge(limited, "Search", SEARCH_LIMIT)
        extra = 3
        for _ in range(extra):
            with pytest.raises(grpc.RpcError) as info:
                stub.Search(request, timeout=60)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details()
            assert details == (
                f"gateway at capacity: {SEARCH_LIMIT} searches in flight "
                "(CROSSMODAL_GATEWAY_MAX_IN_FLIGHT_SEARCHES); retry with backoff"
            )
        for future in admitted:
            reply = future.result()
            assert [r.id for r in reply.results][0] == "a"
        assert metric(limited, "crossmodal_gateway_shed_requests_total", "Search") == shed_before + extra
        # Slots are given back: the gauge returns to zero and a new search is admitted.
        wait_for_gauge(limited, "Search", 0)
        assert stub.Search(request, timeout=60).results[0].id == "a"


def test_an_ingest_stream_beyond_the_limit_is_shed(limited: LocalCluster) -> None:
    release = threading.Event()

    def held() -> Iterator[gateway_pb2.IngestRequest]:
        yield gateway_pb2.IngestRequest(id="held", text="a green triangle")
        release.wait(60)  # keeps the stream open, holding its slot, until the test is done

    shed_before = metric(limited, "crossmodal_gateway_shed_requests_total", "Ingest")
    with grpc.insecure_channel(limited.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        first = stub.Ingest(held(), timeout=120)
        try:
            assert next(first).status.code == 0
            wait_for_gauge(limited, "Ingest", 1)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Ingest(iter([gateway_pb2.IngestRequest(id="x", text="a star")]), timeout=60))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "gateway at capacity: 1 ingest streams open" in info.value.details()
            assert metric(limited, "crossmodal_gateway_shed_requests_total", "Ingest") == shed_before + 1
        finally:
            release.set()
        assert list(first) == []
    wait_for_gauge(limited, "Ingest", 0)
    with Client(limited.address) as client:
        assert all(a.ok for a in client.ingest([Item("y", text="a small star")]))


def test_an_idle_ingest_stream_is_closed_and_frees_its_slot(tmp_path: Path, bundle_dir: Path) -> None:
    idle_seconds = 3
    spec = cluster_spec(
        tmp_path / "c",
        bundle_dir,
        shards=1,
        replicas=1,
        CROSSMODAL_GATEWAY_MAX_INGEST_STREAMS="1",
        CROSSMODAL_GATEWAY_INGEST_IDLE_SECONDS=str(idle_seconds),
    )
    release = threading.Event()

    def idle() -> Iterator[gateway_pb2.IngestRequest]:
        yield gateway_pb2.IngestRequest(id="first", text="a green triangle")
        release.wait(60)  # a client that opened a stream and went quiet

    with LocalCluster(spec) as running, grpc.insecure_channel(running.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        first = stub.Ingest(idle(), timeout=30)
        try:
            assert next(first).status.code == 0
            started = time.monotonic()
            # While it holds the only slot, another stream is shed and told when an idle slot frees itself.
            with pytest.raises(grpc.RpcError) as shed:
                list(stub.Ingest(iter([gateway_pb2.IngestRequest(id="x", text="a star")]), timeout=30))
            assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"a stream idle for {idle_seconds} s is closed; retry with backoff" in shed.value.details()
            # The idle stream is closed by the gateway, long before the client's own 30 s deadline.
            with pytest.raises(grpc.RpcError) as closed:
                list(first)
            assert closed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "CROSSMODAL_GATEWAY_INGEST_IDLE_SECONDS" in closed.value.details()
            assert time.monotonic() - started < 20
        finally:
            release.set()
        wait_for_gauge(running, "Ingest", 0)
        with Client(running.address) as client:
            assert all(a.ok for a in client.ingest([Item("second", text="a small star")]))
