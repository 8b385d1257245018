"""Coalescing of concurrent searches: the calls that queue for a backend while it is busy go as one call.

Every search costs the gateway one call to an encoder and one to each shard, and with gRPC in Python a
call costs more CPU, on both sides, than the encoding or the graph search behind it. A `Coalescer`
keeps at most `in_flight` calls to its backend open; a query that arrives while that many are open
waits for one of them to finish, then goes together with every query that queued meanwhile (up to
`max_batch`). Nothing ever waits on a timer: a lone client's query goes out at once, alone, and
under load batches form by themselves, one per round trip. It is the encoder's dynamic batching
(services/encoder/batching.py) applied to the gateway's own calls.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Histogram

Q = TypeVar("Q")
A = TypeVar("A")

BATCH_SIZE = Histogram(
    "crossmodal_gateway_coalesced_batch_size",
    "Queries per call the gateway sent to a backend (1 when nothing else was waiting), by backend.",
    ["backend"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

# Sends a batch of queries with a timeout; one answer or exception per query, in order.
Send = Callable[[list[Q], float], Awaitable[Sequence["A | BaseException"]]]


@dataclass(eq=False)
class _Waiting(Generic[Q, A]):
    query: Q
    future: asyncio.Future[A]
    deadline: float


def _expire(future: asyncio.Future[A], timeout: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no answer within {timeout:.3f}s"))


class Coalescer(Generic[Q, A]):
    """Sends queries to one backend, at most `in_flight` calls at once, each with whatever has queued."""

    def __init__(self, name: str, send: Send[Q, A], in_flight: int, max_batch: int) -> None:
        self.name = name
        self._send = send
        self._in_flight = max(1, in_flight)
        self._max_batch = max(1, max_batch)
        self._queue: deque[_Waiting[Q, A]] = deque()
        self._open = 0
        # The calls in flight: the event loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        self._sizes = BATCH_SIZE.labels(name)

    async def submit(self, query: Q, timeout: float) -> A:
        """The backend's answer to `query`; raises what the call raised for it, or TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        waiting: _Waiting[Q, A] = _Waiting(query, loop.create_future(), loop.time() + timeout)
        # One timer, not asyncio.wait_for: this runs once per shard per search, and wait_for's extra
        # task and futures were a visible share of the gateway's CPU. A caller that is cancelled
        # cancels its future (awaited directly), and a call not yet sent leaves it out.
        expiry = loop.call_at(waiting.deadline, _expire, waiting.future, timeout)
        self._queue.append(waiting)
        self._pump()
        try:
            return await waiting.future
        finally:
            expiry.cancel()

    def _pump(self) -> None:
        while self._open < self._in_flight and self._queue:
            batch: list[_Waiting[Q, A]] = []
            while self._queue and len(batch) < self._max_batch:
                waiting = self._queue.popleft()
                if not waiting.future.done():
                    batch.append(waiting)
            if not batch:
                return
            self._open += 1
            task = asyncio.ensure_future(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[_Waiting[Q, A]]) -> None:
        try:
            self._sizes.observe(len(batch))
            loop = asyncio.get_running_loop()
            timeout = max(w.deadline for w in batch) - loop.time()
            try:
                answers = await self._send([w.query for w in batch], max(timeout, 0.001))
            except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the call's error
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            for waiting, answer in zip(batch, answers, strict=True):
                if waiting.future.done():
                    continue
                if isinstance(answer, BaseException):
                    waiting.future.set_exception(answer)
                else:
                    waiting.future.set_result(answer)
        finally:
            self._open -= 1
            self._pump()
