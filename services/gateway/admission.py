"""Load shedding: bounds on in-flight Search calls and open Ingest streams, refused at once when full.

Without a bound, an aio gRPC server accepts every call: under an offered load above capacity the calls
queue on the event loop and in the encoders, every latency climbs until callers' deadlines expire and
no one gets an answer in time. A bound on the calls in flight keeps the admitted ones at the latency of
a saturated but not overloaded gateway (about limit / capacity) and answers the excess within
milliseconds with RESOURCE_EXHAUSTED, which clients retry with backoff (or a load balancer sends to
another replica). grpc's own `maximum_concurrent_rpcs` (CROSSMODAL_MAX_CONCURRENT_RPCS) is no substitute:
it counts every method, health checks included, so a busy gateway would fail its probes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from services.common.interceptors import responses, wrap_handler
from services.gateway.config import GatewayConfig
from services.gateway.metrics import ADMISSION_IN_FLIGHT, SHED_REQUESTS

GATEWAY_SERVICE = "crossmodal.v1.GatewayService"


class Gate:
    """A bound on the calls of one method in progress at once; 0 means unbounded."""

    def __init__(self, method: str, limit: int, what: str, setting: str, note: str = "") -> None:
        self.method = method
        self.limit = limit
        self.in_flight = 0
        self.message = f"gateway at capacity: {limit} {what} ({setting}); " + (f"{note}; " if note else "")
        self.message += "retry with backoff"
        self._gauge = ADMISSION_IN_FLIGHT.labels(method)
        self._shed = SHED_REQUESTS.labels(method)

    def try_enter(self) -> bool:
        """Take a slot; False (and the shed counter moves) when every slot is taken."""
        # Handlers of an aio server all run on one event loop thread, so a plain counter is race-free.
        if self.limit and self.in_flight >= self.limit:
            self._shed.inc()
            return False
        self.in_flight += 1
        self._gauge.set(self.in_flight)
        return True

    def leave(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1
        self._gauge.set(self.in_flight)


def gates(config: GatewayConfig) -> dict[str, Gate]:
    """The gateway's gates by full method name."""
    return {
        f"/{GATEWAY_SERVICE}/Search": Gate(
            "Search", config.max_in_flight_searches, "searches in flight", "CROSSMODAL_GATEWAY_MAX_IN_FLIGHT_SEARCHES"
        ),
        f"/{GATEWAY_SERVICE}/Ingest": Gate(
            "Ingest",
            config.max_ingest_streams,
            "ingest streams open",
            "CROSSMODAL_GATEWAY_MAX_INGEST_STREAMS",
            # A slot held by an idle stream frees itself; say when, so a caller knows how long to back off.
            f"a stream idle for {config.ingest_idle_seconds:g} s is closed",
        ),
        # Each open video stream holds its frames' vectors until the video ends: bounded like ingest streams.
        f"/{GATEWAY_SERVICE}/IngestVideo": Gate(
            "IngestVideo",
            config.max_ingest_streams,
            "video ingest streams open",
            "CROSSMODAL_GATEWAY_MAX_INGEST_STREAMS",
        ),
        # A sound stream holds its windows' vectors and up to one clip of samples until the sound ends.
        f"/{GATEWAY_SERVICE}/IngestAudio": Gate(
            "IngestAudio",
            config.max_ingest_streams,
            "sound ingest streams open",
            "CROSSMODAL_GATEWAY_MAX_INGEST_STREAMS",
        ),
    }


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a gated call with RESOURCE_EXHAUSTED when its method already has `limit` calls in flight."""

    def __init__(self, method_gates: Mapping[str, Gate]) -> None:
        self._gates = dict(method_gates)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler of a gated method so that it holds a slot while it runs."""
        handler = await continuation(handler_call_details)
        gate = self._gates.get(handler_call_details.method)
        if handler is None or gate is None:
            return handler

        # The slot is taken inside the handler, not here, so that a call cancelled before its handler
        # starts never holds one, and every slot taken is given back by the same frame's finally.
        def wrap_unary(behavior: Any) -> Any:
            async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if not gate.try_enter():
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, gate.message)
                try:
                    return await behavior(request, context)
                finally:
                    gate.leave()

            return admitted

        def wrap_stream(behavior: Any) -> Any:
            async def admitted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if not gate.try_enter():
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, gate.message)
                try:
                    async for response in responses(behavior, request, context):
                        yield response
                finally:
                    gate.leave()

            return admitted

        return wrap_handler(handler, wrap_unary, wrap_stream)
