"""The HTTP service's errors and the one table that maps a gRPC status to the HTTP status a caller sees.

Every failure, whether the gateway's status, a body that does not parse or a request over a limit, ends
as a google.rpc.Status JSON body, {"code": <gRPC code number>, "message": ..., "details": []}, with the
HTTP status this table gives its code (the mapping google.rpc.Code documents). Only this module decides it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import structlog
from aiohttp import web

log = structlog.get_logger("http")

# google.rpc.Code -> HTTP, as googleapis' google/rpc/code.proto states for each code.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# Failures that only HTTP has, with the gRPC code their body carries (what the request would get over gRPC).
HTTP_ONLY_CODES: dict[int, grpc.StatusCode] = {
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    411: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.INVALID_ARGUMENT,
}
# Retrying these may succeed (crossmodal.transport.RETRYABLE); a hint for HTTP clients and proxies.
RETRY_AFTER_SECONDS = {429: "1", 503: "1"}


class HttpError(Exception):
    """A request refused or failed, with its gRPC code, message and, for HTTP-only failures, its HTTP status."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = HTTP_STATUS[code] if http_status is None else http_status


def http_only(http_status: int, message: str) -> HttpError:
    """An error that only HTTP has (413 body too large, 431 headers too large, ...)."""
    return HttpError(HTTP_ONLY_CODES[http_status], message, http_status)


def status_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """The google.rpc.Status JSON object for `code` and `message`."""
    return {"code": code.value[0], "message": message, "details": []}


def error_of(error: BaseException) -> HttpError:
    """The HttpError a caller gets for `error`: the gateway's status as it is, anything unexpected as INTERNAL."""
    if isinstance(error, HttpError):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        message = error.details() or code.name
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"the gateway is unavailable: {message}"
        return HttpError(code, message)
    if isinstance(error, web.HTTPException):
        code = HTTP_ONLY_CODES.get(error.status) or _code_of_http(error.status)
        return HttpError(code, error.reason if error.text is None else _plain(error), error.status)
    if isinstance(error, asyncio.TimeoutError):
        return HttpError(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer from the gateway in time")
    # A bug, not an outage: say so, and keep the traceback in the log for whoever is paged.
    log.error("internal error", error=repr(error), exc_info=error)
    return HttpError(
        grpc.StatusCode.INTERNAL, f"internal error in the HTTP service ({type(error).__name__}); it was logged"
    )


def _code_of_http(http_status: int) -> grpc.StatusCode:
    """The gRPC code whose HTTP status is `http_status` (the first in the table), else UNKNOWN or INTERNAL."""
    for code, status in HTTP_STATUS.items():
        if status == http_status:
            return code
    return grpc.StatusCode.INTERNAL if http_status >= 500 else grpc.StatusCode.UNKNOWN


def _plain(error: web.HTTPException) -> str:
    text = (error.text or "").strip()
    # aiohttp's own texts start with the status line ("404: Not Found"); keep the human part.
    prefix = f"{error.status}: "
    return text[len(prefix) :] if text.startswith(prefix) else text or error.reason


def error_response(error: HttpError, request_id: str | None = None) -> web.Response:
    """The JSON response for `error`, with Retry-After where a retry may succeed."""
    headers = {}
    if error.http_status in RETRY_AFTER_SECONDS:
        headers["Retry-After"] = RETRY_AFTER_SECONDS[error.http_status]
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return web.Response(
        status=error.http_status,
        text=json.dumps(status_body(error.code, error.message)),
        content_type="application/json",
        headers=headers,
    )
