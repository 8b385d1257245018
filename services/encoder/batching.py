"""A generic dynamic batcher: concurrent callers' items are gathered into one call of a batch function.

Callers first *admit* their items (`DynamicBatcher.admit`), which reserves room in a bounded queue
or fails at once with `QueueFullError`; then they prepare the items (decode, tokenize) and
`submit` them. A single worker task runs the batch function on its own thread (so the event loop
keeps serving while it computes) and, as soon as that thread is free, takes whatever is queued, up
to `max_batch` items. Items that arrive while a batch runs are gathered for the next one, so under
load batches fill up by themselves, and a lone request never waits for company. `max_wait` (0 by
default) optionally holds a partial batch while the thread is idle, until `max_batch` items are
waiting or the oldest has waited that long: it trades the latency of light load for fuller batches,
which only pays when a batch of n costs much less than n batches of one.

The queue counts every admitted item until the worker takes it: items still being prepared
count too, so a flood of large requests cannot pile up unbounded work in the preprocessing pool.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import structlog

log = structlog.get_logger("batcher")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class QueueFullError(Exception):
    """The batcher's queue has no room for the items of a request; retry later."""

    def __init__(self, requested: int, queued: int, capacity: int) -> None:
        self.requested = requested
        self.queued = queued
        self.capacity = capacity
        if requested > capacity:
            detail = f"the request's {requested} items exceed the whole queue ({capacity} items); send fewer"
        else:
            detail = f"{queued} of {capacity} queue slots are taken, {requested} needed; retry with backoff"
        super().__init__(f"the encoder queue is full: {detail}")


class BatcherClosedError(Exception):
    """The batcher was closed (the server is shutting down) before the items ran."""


class BatchObserver(Protocol):
    """Receives the batcher's measurements (the encoder wires them to Prometheus)."""

    def queue_depth(self, items: int) -> None:
        """The number of admitted items not yet taken into a batch changed to `items`."""

    def batch_done(self, size: int, seconds: float, waited: Sequence[float]) -> None:
        """A batch of `size` items ran for `seconds`; `waited` holds each item's time in the queue."""


@dataclass(eq=False)
class _Entry(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]
    enqueued: float


class Admission(Generic[ItemT, ResultT]):
    """Queue slots reserved for one request's items; release what is not submitted (a context manager)."""

    def __init__(self, batcher: DynamicBatcher[ItemT, ResultT], slots: int) -> None:
        self._batcher = batcher
        self.slots = slots

    def release(self, count: int = 1) -> None:
        """Give back `count` slots, e.g. for items that failed preprocessing."""
        count = min(count, self.slots)
        self.slots -= count
        self._batcher._release(count)

    async def submit(self, items: Sequence[ItemT]) -> list[ResultT | BaseException]:
        """Queue `items` (using this admission's slots) and wait for their results, in order.

        A batch failure is returned in place of the result of each item it held, so that the
        caller can report it per item; cancelling the caller withdraws items not yet taken.
        """
        if len(items) > self.slots:
            raise ValueError(f"{len(items)} items submitted but only {self.slots} slots admitted")
        self.slots -= len(items)
        return await self._batcher._submit(items)

    def __enter__(self) -> Admission[ItemT, ResultT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release(self.slots)


class DynamicBatcher(Generic[ItemT, ResultT]):
    """Gathers items from concurrent callers into batches of at most `max_batch`, run one at a time."""

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], Sequence[ResultT]],
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        observer: BatchObserver | None = None,
        thread_name: str = "batch",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_s >= 0")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self._observer = observer
        # Injectable so that tests can stop time and prove what does not depend on it.
        self._clock = clock
        # One thread: batches run one after another. Inference parallelises inside onnxruntime's
        # own thread pool; two concurrent batches would only fight over the same cores.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._entries: collections.deque[_Entry[ItemT, ResultT]] = collections.deque()
        self._reserved = 0
        # Set when the worker has something to do: the first item arrived, or a batch is full.
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Admitted items not yet taken into a batch (being prepared or waiting)."""
        return self._reserved

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="dynamic-batcher")

    async def close(self) -> None:
        """Stop the worker; items still queued fail with `BatcherClosedError`."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._entries:
            entry = self._entries.popleft()
            if not entry.future.done():
                entry.future.set_exception(BatcherClosedError("the encoder is shutting down"))
        # A batch still running holds the batch thread until it returns; wait for it on another
        # thread, so the event loop goes on serving (health checks, cancelled calls) meanwhile.
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def admit(self, count: int) -> Admission[ItemT, ResultT]:
        """Reserve queue room for `count` items at once, or raise `QueueFullError` without waiting."""
        if self._closed:
            raise BatcherClosedError("the encoder is shutting down")
        if count < 0:
            raise ValueError("count must be >= 0")
        if self._reserved + count > self.queue_size:
            raise QueueFullError(count, self._reserved, self.queue_size)
        self._reserved += count
        self._notify_depth()
        return Admission(self, count)

    # --- internals -------------------------------------------------------------------------------

    def _release(self, count: int) -> None:
        if count:
            self._reserved -= count
            self._notify_depth()

    def _notify_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self._reserved)

    async def _submit(self, items: Sequence[ItemT]) -> list[ResultT | BaseException]:
        if not items:
            return []
        # Checked first: close() also forgets the worker, and items prepared while the batcher
        # closed must fail as closed, not as a batcher that was never started.
        if self._closed:
            self._release(len(items))
            raise BatcherClosedError("the encoder is shutting down")
        if self._worker is None or self._wake is None:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        now = self._clock()
        entries = [_Entry[ItemT, ResultT](item, loop.create_future(), now) for item in items]
        self._entries.extend(entries)
        # Waking the worker for every arrival would cost the event loop a wake-up per item; between
        # these two events it sleeps until the oldest item's deadline.
        if len(self._entries) == len(entries) or len(self._entries) >= self.max_batch:
            self._wake.set()
        try:
            return list(await asyncio.gather(*(e.future for e in entries), return_exceptions=True))
        except asyncio.CancelledError:
            # The caller went away (deadline, cancellation): free the slots of what was not taken.
            withdrawn = 0
            for entry in entries:
                entry.future.cancel()
                try:
                    self._entries.remove(entry)
                    withdrawn += 1
                except ValueError:
                    pass  # already taken into a batch or failed by close()
            self._release(withdrawn)
            raise

    async def _next_batch(self) -> list[_Entry[ItemT, ResultT]]:
        assert self._wake is not None
        while True:
            if not self._entries:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._entries) >= self.max_batch:
                break
            # The oldest item sets the deadline: after a long batch, items that already waited
            # through it go out at once instead of waiting again.
            remaining = self._entries[0].enqueued + self.max_wait_s - self._clock()
            if remaining <= 0:
                break
            self._wake.clear()
            # On timeout, look again: callers may have withdrawn items while we waited.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
        batch = [self._entries.popleft() for _ in range(min(self.max_batch, len(self._entries)))]
        self._release(len(batch))
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            now = self._clock()
            waited = [now - e.enqueued for e in batch]
            items = [e.item for e in batch]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run_checked, items)
            except asyncio.CancelledError:
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(BatcherClosedError("the encoder is shutting down"))
                raise
            except Exception as exc:  # a failed batch fails its items, never the worker
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
            else:
                for entry, result in zip(batch, results, strict=True):
                    if not entry.future.done():
                        entry.future.set_result(result)
            if self._observer is not None:
                try:
                    self._observer.batch_done(len(batch), time.perf_counter() - started, waited)
                except Exception:  # measurements must never stop the batcher
                    log.exception("batch observer failed")

    def _run_checked(self, items: list[ItemT]) -> Sequence[ResultT]:
        results = self._run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
        return results
