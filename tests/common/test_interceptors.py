"""In-process tests of the shared server bootstrap: interceptors, metrics, request ids and TLS."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
import structlog.testing
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.common.channels import open_channel
from services.common.config import ServerConfig, TLSConfig, load_config
from services.common.interceptors import REQUEST_ID
from services.common.server import RunningServer, start_server
from tests.certs import make_certs

SERVICE = "test.v1.EchoService"


def _identity(data: bytes) -> bytes:
    return data


class EchoService:
    """A raw-bytes service exercising every outcome the interceptors must count."""

    name = "echo"

    def __init__(self, downstream: str | None = None, tls: TLSConfig | None = None) -> None:
        self.downstream = downstream
        self.tls = tls
        self.seen_request_ids: list[str | None] = []

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.seen_request_ids.append(REQUEST_ID.get())
            if request == b"bad":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
            if request == b"boom":
                raise RuntimeError("boom")
            if request == b"forward" and self.downstream:
                async with open_channel(self.downstream, tls=self.tls) as channel:
                    return bytes(await channel.unary_unary(f"/{SERVICE}/Echo")(b"hello"))
            return request

        async def count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            for i in range(int(request.decode())):
                yield str(i).encode()

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity),
                "Count": grpc.unary_stream_rpc_method_handler(count, _identity, _identity),
            },
        )
        server.add_generic_rpc_handlers((handler,))
        return [SERVICE]

    async def start(self) -> None:
        """Nothing to load."""

    async def stop(self) -> None:
        """Nothing to flush."""


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _config(**env: str) -> ServerConfig:
    return load_config(ServerConfig, {"CROSSMODAL_HOST": "127.0.0.1", **env}, port=0, metrics_port=-1)


async def _start(service: EchoService, **env: str) -> RunningServer:
    running = await start_server(service, _config(**env))
    await running.set_serving(True)
    return running


def test_every_rpc_is_counted_by_status_code_and_timed() -> None:
    async def scenario() -> None:
        running = await _start(EchoService())
        labels = {"service": SERVICE}
        before = {
            code: _sample("crossmodal_rpc_requests_total", method="Echo", code=code, **labels)
            for code in ("OK", "INVALID_ARGUMENT", "UNKNOWN")
        }
        before_hist = _sample("crossmodal_rpc_duration_seconds_count", method="Echo", **labels)
        before_stream = _sample("crossmodal_rpc_requests_total", method="Count", code="OK", **labels)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            echo = channel.unary_unary(f"/{SERVICE}/Echo")
            assert await echo(b"hi") == b"hi"
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await echo(b"bad")
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad.value.details() == "bad input"
            with pytest.raises(grpc.aio.AioRpcError) as boom:
                await echo(b"boom")
            assert boom.value.code() == grpc.StatusCode.UNKNOWN
            items = [item async for item in channel.unary_stream(f"/{SERVICE}/Count")(b"3")]
            assert items == [b"0", b"1", b"2"]
        await running.drain(0)
        for code in ("OK", "INVALID_ARGUMENT", "UNKNOWN"):
            after = _sample("crossmodal_rpc_requests_total", method="Echo", code=code, **labels)
            assert after - before[code] == 1, code
        assert _sample("crossmodal_rpc_duration_seconds_count", method="Echo", **labels) - before_hist == 3
        assert _sample("crossmodal_rpc_requests_total", method="Count", code="OK", **labels) - before_stream == 1
        assert _sample("crossmodal_rpc_in_flight", method="Echo", **labels) == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [("INVALID_ARGUMENT", "warning")]),  # a fast success is not logged at info
        ({"CROSSMODAL_RPC_LOG_SLOW_MS": "0"}, [("OK", "info"), ("INVALID_ARGUMENT", "warning")]),  # all are slow
        ({"CROSSMODAL_LOG_LEVEL": "debug"}, [("OK", "debug"), ("INVALID_ARGUMENT", "warning")]),
    ],
)
def test_failed_and_slow_rpcs_are_logged_and_fast_successes_only_at_debug(
    env: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        running = await _start(EchoService(), **env)
        with structlog.testing.capture_logs() as logs:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                echo = channel.unary_unary(f"/{SERVICE}/Echo")
                await echo(b"hi")
                with pytest.raises(grpc.aio.AioRpcError):
                    await echo(b"bad")
            # The server logs a call after its status went out: the client can see the error first, so
            # the capture lasts until the server has finished its calls.
            await running.drain(0)
        return [entry for entry in logs if entry.get("event") == "rpc"]

    lines = asyncio.run(scenario())
    assert [(line["code"], line["log_level"]) for line in lines] == expected


def test_request_id_is_taken_from_the_caller_or_made_and_passed_downstream() -> None:
    async def scenario() -> None:
        downstream = EchoService()
        down = await _start(downstream)
        upstream = EchoService(downstream=f"127.0.0.1:{down.port}")
        up = await _start(upstream)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{up.port}") as channel:
            echo = channel.unary_unary(f"/{SERVICE}/Echo")
            assert await echo(b"forward", metadata=(("x-request-id", "req-42"),)) == b"hello"
            assert await echo(b"forward") == b"hello"
            # Ids outside the safe alphabet or too long are replaced by generated ones.
            assert await echo(b"plain", metadata=(("x-request-id", "bad id {with} spaces"),)) == b"plain"
            assert await echo(b"plain", metadata=(("x-request-id", "x" * 200),)) == b"plain"
        await up.drain(0)
        await down.drain(0)
        assert upstream.seen_request_ids[0] == "req-42"
        assert downstream.seen_request_ids[0] == "req-42"
        generated = upstream.seen_request_ids[1]
        assert generated and len(generated) == 32 and downstream.seen_request_ids[1] == generated
        assert upstream.seen_request_ids[2] not in (None, "bad id {with} spaces")
        assert upstream.seen_request_ids[3] not in (None, "x" * 200)

    asyncio.run(scenario())


def test_health_is_not_serving_until_ready_and_during_drain() -> None:
    async def scenario() -> None:
        running = await start_server(EchoService(), _config())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await running.set_serving(True)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await running.health.enter_graceful_shutdown()
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await running.server.stop(0)

    asyncio.run(scenario())


def test_mutual_tls_server_and_channel(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other", ca_name="another-ca")

    async def scenario() -> None:
        running = await _start(
            EchoService(),
            CROSSMODAL_TLS_CERT_FILE=str(certs.server_cert),
            CROSSMODAL_TLS_KEY_FILE=str(certs.server_key),
            CROSSMODAL_TLS_CLIENT_CA_FILE=str(certs.ca),
        )
        target = f"localhost:{running.port}"
        good = TLSConfig(certs.client_cert, certs.client_key, certs.ca)
        async with open_channel(target, tls=good) as channel:
            assert await channel.unary_unary(f"/{SERVICE}/Echo")(b"secure", timeout=10) == b"secure"
        failures: list[Any] = []
        for tls in (
            None,  # plaintext against a TLS server
            TLSConfig(None, None, certs.ca),  # TLS without a client certificate
            TLSConfig(other.client_cert, other.client_key, certs.ca),  # a certificate of another CA
        ):
            async with open_channel(target, tls=tls) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=5)
                failures.append(info.value.code())
        await running.drain(0)
        assert all(code == grpc.StatusCode.UNAVAILABLE for code in failures), failures

    asyncio.run(scenario())


class _Payload:
    """A request object the test can watch die (bytes cannot be weakly referenced)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def test_a_failed_request_is_freed_at_once_not_by_the_cycle_collector() -> None:
    # A 1.3 MB request with 100,000 filter clauses takes ~14 MB once parsed. When a failed call's frames
    # sat in a reference cycle (the interceptor kept the exception, whose traceback holds the frame that
    # kept it), each such request lived until a full collection, which counts objects, not bytes: one
    # client pushed a gateway from 60 to ~470 MB that way.
    alive: weakref.WeakSet[_Payload] = weakref.WeakSet()

    def parse(data: bytes) -> _Payload:
        payload = _Payload(data)
        alive.add(payload)
        return payload

    class Failing(EchoService):
        def register(self, server: grpc.aio.Server) -> Sequence[str]:
            async def fail(request: _Payload, context: grpc.aio.ServicerContext) -> bytes:
                if request.data == b"bad":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
                raise RuntimeError("boom")

            handler = grpc.method_handlers_generic_handler(
                SERVICE, {"Fail": grpc.unary_unary_rpc_method_handler(fail, parse, _identity)}
            )
            server.add_generic_rpc_handlers((handler,))
            return [SERVICE]

    async def scenario() -> None:
        running = await _start(Failing())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            fail = channel.unary_unary(f"/{SERVICE}/Fail")
            for data in [b"bad", b"boom"] * 10:
                with pytest.raises(grpc.aio.AioRpcError):
                    await fail(data)
            await asyncio.sleep(0.2)  # let the server finish the last call's bookkeeping
            assert len(alive) == 0, f"{len(alive)} of 20 failed requests are still alive"
        await running.drain(0)

    gc.collect()
    gc.disable()  # only reference counting may free them, as between two full collections
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()
