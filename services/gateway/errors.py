"""The gateway's errors and the one table that maps every failure to the status a caller sees.

A refused request, a downstream failure and a bug each end in `status_of`: the unary RPCs abort with
it (through `ErrorMapping`), and the Ingest stream puts it in the failed item's acknowledgement. Only
this module decides which code a failure gets and what its message says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog

from crossmodal.v1 import gateway_pb2
from services.common.limits import LimitError

log = structlog.get_logger("gateway")

INVALID = grpc.StatusCode.INVALID_ARGUMENT


class GatewayError(Exception):
    """A request the gateway refuses or could not serve, with the status to report."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BackendError(GatewayError):
    """A downstream call failed on every address it could go to (down, overloaded, or too slow)."""


def describe_error(error: BaseException) -> str:
    """A one-line description of a downstream failure."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, asyncio.TimeoutError):
        return "DEADLINE_EXCEEDED: no answer in time"
    if isinstance(error, GatewayError | LimitError):
        return error.message
    return repr(error)


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for `error`; anything unexpected is INTERNAL."""
    if isinstance(error, LimitError):
        return INVALID, error.message
    if isinstance(error, GatewayError):
        return error.code, error.message
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code(), describe_error(error)
    if isinstance(error, asyncio.TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, describe_error(error)
    # A bug, not an outage: say so, and keep the traceback in the log for whoever is paged.
    log.error("internal error", error=repr(error), exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error in the gateway ({type(error).__name__}); it was logged"


GATEWAY_METHOD_PREFIX = f"/{gateway_pb2.DESCRIPTOR.services_by_name['GatewayService'].full_name}/"


class ErrorMapping(grpc.aio.ServerInterceptor):
    """Ends the GatewayService's unary calls with the status `status_of` gives their error."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap unary handlers so refused requests end with their status and message."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        # Health and reflection answer for themselves: while starting, Check must say NOT_SERVING.
        if not handler_call_details.method.startswith(GATEWAY_METHOD_PREFIX):
            return handler
        behavior = handler.unary_unary

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not self.ready():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is still starting")
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure gets its status from the one table
                code, message = status_of(exc)
            # Aborted outside the except block, so the abort does not chain the error (whose traceback
            # holds the request's frames) as its context.
            await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(wrapped, handler.request_deserializer, handler.response_serializer)
