"""gRPC interceptors: request ids, per-RPC metrics and log lines, and test-only fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from services.common.metrics import RPC_DURATION, RPC_IN_FLIGHT, RPC_REQUESTS

REQUEST_ID_HEADER = "x-request-id"
# The id of the RPC being served; client interceptors copy it into downstream calls.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("crossmodal_request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Probes hit these every few seconds; their log lines go to debug so they do not drown real traffic.
_QUIET_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

log = structlog.get_logger("rpc")


def split_method(full_method: str) -> tuple[str, str]:
    """Split '/pkg.Service/Method' into ('pkg.Service', 'Method')."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service or "unknown", method or "unknown"


def request_id_from(metadata: Any) -> str:
    """The caller's request id from gRPC-style (key, value) metadata when it is valid, else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _VALID_REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


def _status_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "UNKNOWN" if error is not None and not isinstance(error, grpc.aio.AbortError) else "OK"


class UndecodableRequest:
    """Stands in for a request message that did not parse (bad wire format, invalid UTF-8 in a string)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so that a parse error yields an `UndecodableRequest` instead of raising.

    grpc answers an exception raised while parsing with UNKNOWN; the wrapped behaviour turns the
    marker into INVALID_ARGUMENT, which is what a malformed request is.
    """
    if deserializer is None:
        return None
    inner = deserializer

    def parse(data: bytes) -> Any:
        try:
            return inner(data)
        except DecodeError as exc:
            return UndecodableRequest(str(exc))

    return parse


class UndecodableRequestError(Exception):
    """A request (or stream message) did not parse; the interceptor answers INVALID_ARGUMENT."""


def _checked(request: Any) -> Any:
    if isinstance(request, UndecodableRequest):
        raise UndecodableRequestError(request.reason)
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


async def _checked_stream(requests: Any) -> AsyncIterator[Any]:
    # Raising (not aborting) here: the servicer may read its requests in another task, and only the
    # handler's own task may end the call.
    async for request in requests:
        if isinstance(request, UndecodableRequest):
            raise UndecodableRequestError(request.reason)
        yield request


async def _refuse(context: grpc.aio.ServicerContext, exc: UndecodableRequestError) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request cannot be parsed: {exc}")


async def responses(behavior: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """Yield a response-streaming behaviour's messages, whether it yields them or writes them itself."""
    # grpc accepts both kinds of handler: grpc.health's aio Watch is a coroutine that calls
    # context.write and yields nothing, so iterating it directly fails with UNKNOWN.
    result = behavior(request, context)
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    else:
        await result


def wrap_handler(handler: grpc.RpcMethodHandler, wrap_unary: Any, wrap_stream: Any) -> grpc.RpcMethodHandler:
    """Rebuild `handler` of any streaming kind with behaviours wrapped (responses streamed or not)."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
    )


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Binds a request id, counts and times every RPC by status code, and logs the failed and the slow ones.

    A log line per successful RPC cost a shard more CPU than its search (a JSON line for every one
    of thousands of SearchShard calls a second), so successful RPCs faster than `slow_seconds` are
    logged at debug only; the metrics count and time every call.
    """

    def __init__(self, slow_seconds: float = 1.0, log_debug: bool = False) -> None:
        self._slow = slow_seconds
        self._log_debug = log_debug
        # Each method's metric children, looked up once: labels() takes a lock and builds a key per call.
        self._children: dict[tuple[str, str], tuple[Any, Any, dict[str, Any]]] = {}

    def _metrics(self, service: str, method: str) -> tuple[Any, Any, dict[str, Any]]:
        children = self._children.get((service, method))
        if children is None:
            children = (RPC_IN_FLIGHT.labels(service, method), RPC_DURATION.labels(service, method), {})
            self._children[(service, method)] = children
        return children

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler of one RPC with the request id, metrics and the log line."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, method = split_method(handler_call_details.method)
        request_id = request_id_from(handler_call_details.invocation_metadata)
        quiet = service in _QUIET_SERVICES
        in_flight, duration, requests = self._metrics(service, method)

        def begin(context: Any) -> tuple[float, contextvars.Token[str | None], str]:
            structlog.contextvars.bind_contextvars(request_id=request_id)
            in_flight.inc()
            # The peer is read now, while the call surely exists: a streaming call whose client went away
            # can be freed before its handler's `finally` runs, and gRPC's peer() on it crashes the process.
            return time.perf_counter(), REQUEST_ID.set(request_id), context.peer()

        def end(
            started: float,
            token: contextvars.Token[str | None],
            peer: str,
            context: Any,
            error: BaseException | None,
        ) -> None:
            elapsed = time.perf_counter() - started
            code = _status_name(context, error)
            in_flight.dec()
            counter = requests.get(code)
            if counter is None:
                counter = requests[code] = RPC_REQUESTS.labels(service, method, code)
            counter.inc()
            duration.observe(elapsed)
            emit: Callable[..., Any] | None
            if quiet:
                emit = log.debug if self._log_debug else None
            elif code != "OK":
                emit = log.warning
            elif elapsed >= self._slow:
                emit = log.info
            else:
                emit = log.debug if self._log_debug else None
            if emit is not None:
                fields: dict[str, Any] = {
                    "grpc_service": service,
                    "method": method,
                    "code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "peer": peer,
                }
                if error is not None and not isinstance(error, grpc.aio.AbortError | asyncio.CancelledError):
                    fields["error"] = repr(error)
                emit("rpc", **fields)
            # A stream whose client went away is closed later by the event loop's async-generator
            # finalizer, in another context: its request id was never set there, so there is nothing to undo.
            with contextlib.suppress(ValueError):
                REQUEST_ID.reset(token)
            structlog.contextvars.unbind_contextvars("request_id")

        def wrap_unary(behavior: Any) -> Any:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started, token, peer = begin(context)
                error: BaseException | None = None
                try:
                    return await behavior(_checked(request), context)
                except UndecodableRequestError as exc:
                    error = exc
                    await _refuse(context, exc)
                except BaseException as exc:
                    error = exc
                    # gRPC keeps a failed call's exception in a reference cycle of its own, and the frames of
                    # its traceback hold the request: a parsed request (14 MB for a 1.3 MB filter) would live
                    # until the next full collection, which counts objects, not bytes. Let go of it now.
                    traceback.clear_frames(exc.__traceback__)
                    request = None
                    raise
                finally:
                    end(started, token, peer, context, error)
                    error = None  # this frame is in the error's traceback: no cycle through it either

            return wrapped

        def wrap_stream(behavior: Any) -> Any:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started, token, peer = begin(context)
                error: BaseException | None = None
                try:
                    async for response in responses(behavior, _checked(request), context):
                        yield response
                except UndecodableRequestError as exc:
                    error = exc
                    await _refuse(context, exc)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    end(started, token, peer, context, error)
                    error = None

            return wrapped

        wrapped = wrap_handler(handler, wrap_unary, wrap_stream)
        # This interceptor is the outermost, so its deserializer is the one grpc calls.
        return wrapped._replace(request_deserializer=tolerant_deserializer(handler.request_deserializer))


class FaultInjectionInterceptor(grpc.aio.ServerInterceptor):
    """Test-only: delays the named methods, to prove deadlines, partial answers and graceful drain."""

    def __init__(self, delay_ms: int, methods: tuple[str, ...]) -> None:
        self._delay = delay_ms / 1000.0
        self._methods = frozenset(methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Delay the call before its handler runs when its method is one of the configured ones."""
        handler = await continuation(handler_call_details)
        if handler is None or split_method(handler_call_details.method)[1] not in self._methods:
            return handler
        delay = self._delay

        def wrap_unary(behavior: Any) -> Any:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await asyncio.sleep(delay)
                return await behavior(request, context)

            return wrapped

        def wrap_stream(behavior: Any) -> Any:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await asyncio.sleep(delay)
                async for response in responses(behavior, request, context):
                    yield response

            return wrapped

        return wrap_handler(handler, wrap_unary, wrap_stream)
