"""API keys and per-key rate limits, enforced by a server interceptor before any handler runs."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from services.common.interceptors import wrap_handler

# Probes and tooling must work without a key: Kubernetes' gRPC probes cannot send headers.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def load_api_keys(path: Path) -> list[str]:
    """Read one key per line; blank lines and `#` comments are ignored."""
    keys = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line)
    return keys


def key_id(key: str) -> str:
    """A short, non-reversible name of a key, safe to log and to use as a metric label."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class TokenBucket:
    """A token bucket: `rate` tokens per second, holding at most `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _rejecting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort_unary(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def abort_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    return wrap_handler(handler, lambda _behavior: abort_unary, lambda _behavior: abort_stream)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <key>` when keys are configured, and limits each key's call rate."""

    def __init__(self, keys: Iterable[str], rate: float = 0.0, burst: int = 20) -> None:
        self._keys = [k.encode() for k in keys]
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def _authenticate(self, metadata: Any) -> str | None:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                offered = value[len("Bearer ") :].strip().encode()
                # Constant-time comparison against every key, so timing does not reveal a prefix.
                matched = [k for k in self._keys if hmac.compare_digest(k, offered)]
                if matched:
                    return matched[0].decode()
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Reject unauthenticated or over-rate calls before their handler runs."""
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_SERVICES):
            return handler
        identity = "anonymous"
        if self._keys:
            key = self._authenticate(handler_call_details.invocation_metadata)
            if key is None:
                return _rejecting(
                    handler,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or unknown API key: send the metadata `authorization: Bearer <key>`",
                )
            identity = key_id(key)
        if self._rate > 0:
            bucket = self._buckets.get(identity)
            if bucket is None:
                bucket = self._buckets[identity] = TokenBucket(self._rate, self._burst)
            wait = bucket.take()
            if wait > 0:
                return _rejecting(
                    handler,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self._rate:g} calls/s (burst {self._burst}) exceeded for this "
                    f"key; retry in {wait:.2f}s",
                )
        return handler
