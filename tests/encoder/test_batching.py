"""Unit tests of the dynamic batcher, with a plain function as the batch function."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.encoder.batching import BatcherClosedError, DynamicBatcher, QueueFullError
from services.encoder.config import EncoderConfig

# Long enough that a batch never goes out on time in these tests: only a full batch, or items
# that waited their turn behind a running batch, make one.
FOREVER = 3600.0


class Recorder:
    """A batch function that doubles its inputs and records every batch it ran."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"cannot encode {self.fail_on}")
        return [2 * x for x in items]


class Observed:
    """A BatchObserver that only keeps what it is told.

    It must not assert: the batcher logs and swallows whatever its observer raises, so a failed
    assertion in here would never fail a test. The tests check what it kept instead.
    """

    def __init__(self) -> None:
        self.depths: list[int] = []
        self.batches: list[tuple[int, float, list[float]]] = []

    @property
    def sizes(self) -> list[int]:
        """The size of every batch observed."""
        return [size for size, _, _ in self.batches]

    def queue_depth(self, items: int) -> None:
        """Keep the depth."""
        self.depths.append(items)

    def batch_done(self, size: int, seconds: float, waited: Sequence[float]) -> None:
        """Keep the batch's size, duration and each item's wait."""
        self.batches.append((size, seconds, list(waited)))

    def check_batches(self) -> None:
        """Every batch took a non-negative time and reported one non-negative wait per item."""
        assert self.batches
        for size, seconds, waited in self.batches:
            assert seconds >= 0
            assert len(waited) == size and all(w >= 0 for w in waited)


async def submit(batcher: DynamicBatcher[int, int], items: list[int]) -> list[int | BaseException]:
    """Admit and submit `items` as one caller would."""
    with batcher.admit(len(items)) as admission:
        return await admission.submit(items)


def test_concurrent_callers_share_one_batch() -> None:
    run, observed = Recorder(), Observed()

    async def main() -> list[list[int | BaseException]]:
        batcher = DynamicBatcher(run, max_batch=4, max_wait_s=FOREVER, queue_size=16, observer=observed)
        batcher.start()
        try:
            return await asyncio.gather(*(submit(batcher, [i]) for i in range(4)))
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [[0], [2], [4], [6]]
    assert run.batches == [[0, 1, 2, 3]]
    assert observed.sizes == [4]
    observed.check_batches()
    assert observed.depths[-1] == 0 and max(observed.depths) == 4


def test_a_large_request_is_split_into_batches_in_order() -> None:
    run = Recorder()

    async def main() -> list[int | BaseException]:
        batcher = DynamicBatcher(run, max_batch=4, max_wait_s=0.0, queue_size=16)
        batcher.start()
        try:
            return await submit(batcher, list(range(10)))
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert run.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_partial_batch_goes_out_after_max_wait() -> None:
    run = Recorder()

    async def main() -> list[int | BaseException]:
        batcher = DynamicBatcher(run, max_batch=64, max_wait_s=0.01, queue_size=64)
        batcher.start()
        try:
            return await submit(batcher, [1, 2, 3])
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [2, 4, 6]
    assert run.batches == [[1, 2, 3]]


def test_items_arriving_during_a_batch_form_the_next_one() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def slow(items: list[int]) -> list[int]:
        batches.append(list(items))
        started.set()
        release.wait(30)
        return items

    async def main() -> None:
        batcher = DynamicBatcher(slow, max_batch=8, max_wait_s=0.0, queue_size=16)
        batcher.start()
        first = asyncio.create_task(submit(batcher, [0]))
        await asyncio.to_thread(started.wait, 30)
        # The first batch is running: these three queue behind it and go out together.
        rest = [asyncio.create_task(submit(batcher, [i])) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *rest)
        await batcher.close()

    asyncio.run(main())
    assert batches == [[0], [1, 2, 3]]


def test_a_full_queue_refuses_at_once_and_keeps_its_count() -> None:
    async def main() -> None:
        batcher = DynamicBatcher(Recorder(), max_batch=4, max_wait_s=FOREVER, queue_size=5)
        batcher.start()
        held = batcher.admit(3)
        with pytest.raises(QueueFullError) as info:
            batcher.admit(3)
        assert "3 of 5 queue slots are taken" in str(info.value)
        with pytest.raises(QueueFullError) as info:
            batcher.admit(6)
        assert "exceed the whole queue (5 items)" in str(info.value)
        assert batcher.queued == 3
        held.release(3)
        assert batcher.queued == 0
        batcher.admit(5).release(5)
        await batcher.close()

    asyncio.run(main())


def test_unsubmitted_slots_are_released_on_exit() -> None:
    run = Recorder()

    async def main() -> list[int | BaseException]:
        batcher = DynamicBatcher(run, max_batch=2, max_wait_s=FOREVER, queue_size=3)
        batcher.start()
        with batcher.admit(3) as admission:
            admission.release(1)  # e.g. an item that failed preprocessing
            out = await admission.submit([5, 6])
        assert batcher.queued == 0
        await batcher.close()
        return out

    assert asyncio.run(main()) == [10, 12]
    assert run.batches == [[5, 6]]


def test_a_failed_batch_fails_only_its_own_items() -> None:
    run = Recorder(fail_on=3)

    async def main() -> list[int | BaseException]:
        batcher = DynamicBatcher(run, max_batch=2, max_wait_s=0.0, queue_size=8)
        batcher.start()
        try:
            return await submit(batcher, [1, 2, 3, 4, 5])
        finally:
            await batcher.close()

    out = asyncio.run(main())
    assert out[:2] == [2, 4] and out[4] == 10
    assert all(isinstance(x, RuntimeError) and "cannot encode 3" in str(x) for x in out[2:4])


def test_a_cancelled_caller_withdraws_its_items() -> None:
    run, observed = Recorder(), Observed()

    async def main() -> None:
        batcher = DynamicBatcher(run, max_batch=4, max_wait_s=FOREVER, queue_size=4, observer=observed)
        batcher.start()
        waiting = asyncio.create_task(submit(batcher, [1, 2, 3]))
        while batcher.queued != 3 or not observed.depths:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert batcher.queued == 0
        # The withdrawn items left room: a full batch of new ones runs alone.
        assert await submit(batcher, [7, 8, 9, 10]) == [14, 16, 18, 20]
        await batcher.close()

    asyncio.run(main())
    assert run.batches == [[7, 8, 9, 10]]
    assert observed.sizes == [4]
    observed.check_batches()


def test_close_fails_waiting_items_and_refuses_new_ones() -> None:
    async def main() -> None:
        batcher = DynamicBatcher(Recorder(), max_batch=4, max_wait_s=FOREVER, queue_size=4)
        batcher.start()
        waiting = asyncio.create_task(submit(batcher, [1]))
        while batcher.queued == 0:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        await batcher.close()
        out = await waiting
        assert isinstance(out[0], BatcherClosedError)
        with pytest.raises(BatcherClosedError):
            batcher.admit(1)

    asyncio.run(main())


def test_close_waits_for_a_running_batch_without_stopping_the_event_loop() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(items: list[int]) -> list[int]:
        started.set()
        release.wait(30)
        return items

    # Releases the batch if the event loop is stuck, so that a regression fails instead of hanging.
    rescue = threading.Timer(3.0, release.set)

    async def main() -> tuple[float, bool, list[int | BaseException]]:
        batcher = DynamicBatcher(slow, max_batch=1, max_wait_s=0.0, queue_size=4)
        batcher.start()
        running = asyncio.create_task(submit(batcher, [1]))
        await asyncio.to_thread(started.wait, 30)
        closing = asyncio.create_task(batcher.close())
        rescue.start()
        # The loop must keep turning while close() waits for the batch thread.
        ticks, longest, last = 0, 0.0, time.monotonic()
        while ticks < 20:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest, last, ticks = max(longest, now - last), now, ticks + 1
        closed_early = closing.done()
        release.set()
        await asyncio.wait_for(closing, 30)
        return longest, closed_early, await running

    try:
        longest, closed_early, out = asyncio.run(main())
    finally:
        rescue.cancel()
    assert longest < 1.0, f"the event loop stood still for {longest:.2f} s while the batcher closed"
    assert not closed_early, "close() returned while the batch thread was still running"
    assert isinstance(out[0], BatcherClosedError)


def test_items_submitted_after_close_fail_as_closed() -> None:
    async def main() -> None:
        batcher = DynamicBatcher(Recorder(), max_batch=4, max_wait_s=FOREVER, queue_size=4)
        batcher.start()
        # Admitted before the close, submitted after it: as an item whose preprocessing outlived the batcher.
        admission = batcher.admit(2)
        await batcher.close()
        with pytest.raises(BatcherClosedError):
            await admission.submit([1, 2])
        assert batcher.queued == 0

    asyncio.run(main())


def test_a_batch_function_returning_the_wrong_count_is_an_error() -> None:
    async def main() -> list[int | BaseException]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            lambda xs: xs[:-1], max_batch=4, max_wait_s=0.0, queue_size=4
        )
        batcher.start()
        try:
            return await submit(batcher, [1, 2])
        finally:
            await batcher.close()

    out = asyncio.run(main())
    assert all(isinstance(x, RuntimeError) and "returned 1 results for 2 items" in str(x) for x in out)


@settings(max_examples=25, deadline=None)
@given(
    requests=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=12),
    max_batch=st.integers(min_value=1, max_value=9),
)
def test_every_item_gets_its_own_result_in_batches_within_the_limit(requests: list[int], max_batch: int) -> None:
    run = Recorder()

    async def main() -> list[list[int | BaseException]]:
        batcher = DynamicBatcher(run, max_batch=max_batch, max_wait_s=0.001, queue_size=sum(requests))
        batcher.start()
        starts = [sum(requests[:i]) for i in range(len(requests))]
        try:
            return await asyncio.gather(
                *(submit(batcher, list(range(s, s + n))) for s, n in zip(starts, requests, strict=True))
            )
        finally:
            await batcher.close()

    out = asyncio.run(main())
    flat = [x for chunk in out for x in chunk]
    assert flat == [2 * i for i in range(sum(requests))]
    assert all(1 <= len(b) <= max_batch for b in run.batches)
    assert sorted(x for b in run.batches for x in b) == list(range(sum(requests)))


def test_a_lone_item_runs_at_once_with_the_default_wait() -> None:
    """With the configured default, a lone item is never held back for company.

    The batcher's clock is stopped: any wait above zero would then never expire and the item would
    not be answered within the timeout, so passing does not depend on how fast this machine is.
    """
    run, observed = Recorder(), Observed()
    default_wait_s = EncoderConfig().max_wait_ms / 1000.0

    async def main() -> list[int | BaseException]:
        batcher = DynamicBatcher(
            run, max_batch=32, max_wait_s=default_wait_s, queue_size=32, observer=observed, clock=lambda: 0.0
        )
        batcher.start()
        try:
            return await asyncio.wait_for(submit(batcher, [5]), timeout=30)
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [10]
    assert run.batches == [[5]]
    assert observed.sizes == [1]


def test_a_wait_cap_holds_a_partial_batch_while_the_thread_is_idle() -> None:
    """The optional cap still works: with the batcher's clock stopped, a partial batch waits until it is full."""
    run = Recorder()

    async def main() -> list[list[int | BaseException]]:
        batcher = DynamicBatcher(run, max_batch=3, max_wait_s=0.005, queue_size=8, clock=lambda: 0.0)
        batcher.start()
        try:
            first = asyncio.create_task(submit(batcher, [1]))
            # Several timeouts of the cap pass (in loop time) without the frozen deadline expiring.
            await asyncio.sleep(0.05)
            assert run.batches == []
            return await asyncio.wait_for(asyncio.gather(first, submit(batcher, [2, 3])), timeout=30)
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [[2], [4, 6]]
    assert run.batches == [[1, 2, 3]]


def test_without_a_wait_everything_queued_behind_a_batch_goes_in_the_next_one() -> None:
    """Batches form under concurrency without any wait: the next batch takes all that queued, up to max_batch."""
    started, release = threading.Event(), threading.Event()
    run = Recorder()

    def slow(items: list[int]) -> list[int]:
        out = run(items)
        started.set()
        if items == [0]:
            release.wait(30)
        return out

    observed = Observed()

    async def main() -> None:
        batcher = DynamicBatcher(slow, max_batch=4, max_wait_s=0.0, queue_size=16, observer=observed)
        batcher.start()
        try:
            first = asyncio.create_task(submit(batcher, [0]))
            await asyncio.to_thread(started.wait, 30)
            rest = [asyncio.create_task(submit(batcher, [i])) for i in range(1, 7)]
            while len(batcher._entries) < 6:  # all six submitted behind the running batch
                await asyncio.sleep(0.001)
            release.set()
            await asyncio.gather(first, *rest)
        finally:
            await batcher.close()

    asyncio.run(main())
    assert run.batches == [[0], [1, 2, 3, 4], [5, 6]]
    # The mean batch size the encoder exports (histogram sum / count): 7 items in 3 batches.
    assert sum(observed.sizes) / len(observed.sizes) == pytest.approx(7 / 3)


def test_a_batch_does_not_wait_for_an_item_still_being_prepared() -> None:
    """An admitted item whose preparation is slow (a large decode) never holds the others back."""
    run = Recorder()

    async def main() -> list[int | BaseException]:
        batcher = DynamicBatcher(run, max_batch=8, max_wait_s=0.0, queue_size=8, clock=lambda: 0.0)
        batcher.start()
        try:
            slow = batcher.admit(1)  # admitted, never submitted while the other item is answered
            with batcher.admit(1) as fast:
                out = await asyncio.wait_for(fast.submit([1]), timeout=30)
            slow.release()
            return out
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [2]
    assert run.batches == [[1]]
