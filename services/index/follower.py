"""The write-log follower: how an index replica in log mode gets its writes (docs/architecture.md, "The write log").

With CROSSMODAL_LOG_URL set, the gateway publishes every write to NATS JetStream and no replica is written
directly. This follower connects, waits for the log's streams (one per partition), and for every partition
each served shard owns (`Placement.partitions_of`) runs one loop: an ephemeral pull consumer of the
partition's stream that starts right after the sequence the shard's store recorded (or at the beginning
for a partition it never applied), fetches batches (up to `_BATCH` messages: whatever is there, or the
first write that arrives while waiting), and hands each batch to `Shard.apply_log` on the shard's own
apply thread. The store commits the batch's items and the
partition's new position in one transaction (`shard.py` explains why that makes kill -9 safe).

Why these choices:
- One consumer per partition, no acknowledgements (AckPolicy.NONE): the store's position is the only
  progress that counts, so the server never needs to know what was applied, and a consumer is disposable.
  Every failure (disconnect, timeout, a consumer the server dropped, a bug) ends in the same recovery:
  back off, drop the consumer, create a new one after the position the store recorded.
- Without acknowledgements the server does not redeliver, so a message lost in transit would be skipped
  silently. The consumer sequence of delivered messages has no holes, so the loop checks it and treats a
  hole as a failure (a new consumer re-reads from the store's position).
- Applies run on one thread per shard: a shard's writers serialise on its write lock anyway, and the RPC
  workers never queue behind a long catch-up.
- Sequences are those of the partition's own stream, so a position is (partition, sequence).
- A message that cannot be applied (undecodable, on the wrong subject, another model, a broken limit) is
  skipped, counted and logged; its position still advances, or one poison message would stall its
  partition for ever.
- `start` returns (and the service turns SERVING) only once every owned partition was seen with nothing
  pending, so a new replica that fills itself from the log is not served half-empty.
- Read your writes: a read that carries `after` positions waits on a condition the loops signal after
  each applied batch, within the call's deadline, and is answered UNAVAILABLE when the deadline is near.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import nats.errors
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common import writelog
from services.common.config import ConfigError
from services.common.writelog import LogConfig, LogLayout
from services.index import metrics
from services.index.domain import LogApplyResult, LogOp, ShardStats, item_from_proto
from services.index.errors import PreconditionError, ShardUnavailableError
from services.index.shard import Shard

log = structlog.get_logger("index.follower")

# Most messages one fetch returns (and one store transaction applies).
_BATCH = 512
# A fetch with nothing to deliver waits this long; a write arriving meanwhile ends it at once.
_IDLE_FETCH_SECONDS = 2.0
# Retries after a failure wait 0.2 s, doubling up to 5 s.
_BACKOFF_FIRST_SECONDS = 0.2
_BACKOFF_MAX_SECONDS = 5.0
# How often waiting for the log or catching up is logged.
_PROGRESS_SECONDS = 5.0
# The server removes a consumer nobody fetched from for this long (one left behind by a crash).
_CONSUMER_INACTIVE_SECONDS = 30.0
# Removing a consumer on the way out is a courtesy; it must not hold up recovery or shutdown.
_DROP_TIMEOUT_SECONDS = 1.0

# What the apply thread gets of a message: subject, sequence in its partition's stream, payload.
RawMessage = tuple[str, int, bytes]


class _GapError(Exception):
    """The consumer delivered messages this loop never received."""


@dataclasses.dataclass
class _Partition:
    """What the follower knows of one partition of one shard."""

    shard: Shard
    number: int
    # Messages of the partition in the log after the last applied one, as last reported by the server
    # (updated right after each batch, so it can trail the applied position by that long).
    pending: int = 0
    # When the oldest write not applied yet was stored (epoch seconds), while one is known.
    oldest: float | None = None
    caught_up: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class LogFollower:
    """Applies the write-log partitions of every served shard, in order; see the module docstring."""

    def __init__(self, config: LogConfig, name: str = "crossmodal-index") -> None:
        self.config = config
        self._name = name
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._layout: LogLayout | None = None
        self._shards: dict[int, list[_Partition]] = {}
        self._executors: dict[int, ThreadPoolExecutor] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Signalled after every applied batch; reads waiting for `after` positions wait on it.
        self._applied = asyncio.Condition()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self, shards: Mapping[int, Shard]) -> None:
        """Connect, wait for the stream, follow every owned partition; return once all were caught up."""
        self._nc = await self._connect()
        self._js = self._nc.jetstream(timeout=self.config.timeout_seconds)
        layout = await self._wait_for_stream(self._js)
        await self._check(self._js, layout, shards)
        for number, shard in shards.items():
            label = str(number)
            self._executors[number] = ThreadPoolExecutor(1, thread_name_prefix=f"index-log-{number}")
            parts = [_Partition(shard, p) for p in layout.placement.partitions_of(number)]
            self._shards[number] = parts
            metrics.LOG_LAG_SECONDS.labels(label).set_function(functools.partial(self.lag_seconds, number))
            for part in parts:
                metrics.LOG_APPLIED_SEQUENCE.labels(label, str(part.number)).set(shard.log_position(part.number))
        self._layout = layout
        for parts in self._shards.values():
            for part in parts:
                self._tasks.append(
                    asyncio.create_task(self._follow(part), name=f"log-{part.shard.number}-{part.number}")
                )
        await self._wait_caught_up()

    async def stop(self) -> None:
        """Stop following, let a batch being applied finish, and close the connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), self.config.timeout_seconds)
        # An apply already on its thread completes before the shards are closed.
        for executor in self._executors.values():
            await asyncio.to_thread(executor.shutdown, True)

    async def _connect(self) -> NATS:
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return await writelog.connect(self.config, self._name)
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                failures += 1
                delay = min(_BACKOFF_MAX_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (failures - 1))
                log.warning(
                    "waiting for the write log to answer",
                    servers=self.config.servers,
                    error=repr(exc),
                    seconds=round(time.monotonic() - started),
                )
                await asyncio.sleep(delay)

    async def _wait_for_stream(self, js: JetStreamContext) -> LogLayout:
        started = time.monotonic()
        last_log = -_PROGRESS_SECONDS
        while True:
            try:
                return await writelog.read_layout(js, self.config.stream)
            except nats.js.errors.NotFoundError:
                reason = "the streams do not exist yet (the gateway creates them)"
            except (nats.errors.Error, TimeoutError) as exc:
                reason = f"the log did not answer ({exc!r})"
            if time.monotonic() - last_log >= _PROGRESS_SECONDS:
                last_log = time.monotonic()
                log.warning(
                    "waiting for the write log streams",
                    stream=self.config.stream,
                    reason=reason,
                    seconds=round(last_log - started),
                )
            await asyncio.sleep(0.25)

    async def _check(self, js: JetStreamContext, layout: LogLayout, shards: Mapping[int, Shard]) -> None:
        """Refuse to start for shards the log has no partitions for, or a store ahead of its partition's stream."""
        count = layout.placement.shards
        for number in shards:
            if number >= count:
                raise ConfigError(
                    f"CROSSMODAL_INDEX_SHARDS: shard {number} does not exist in the write log {layout.stream}, "
                    f"which was created for {count} shards (0 to {count - 1})"
                )
        for number, shard in shards.items():
            for partition in layout.placement.partitions_of(number):
                applied = shard.log_position(partition)
                if not applied:
                    continue
                stream = layout.stream_of(partition)
                last = int((await js.stream_info(stream)).state.last_seq)
                if applied > last:
                    raise PreconditionError(
                        f"shard {number} applied partition {partition} of the write log up to sequence {applied}, "
                        f"but the stream {stream} ends at {last}: it was recreated or lost data. Empty this "
                        "replica's data directory to fill it from the log again"
                    )

    async def _wait_caught_up(self) -> None:
        started = time.monotonic()
        waits = [asyncio.ensure_future(p.caught_up.wait()) for parts in self._shards.values() for p in parts]
        try:
            while True:
                _, behind = await asyncio.wait(waits, timeout=_PROGRESS_SECONDS)
                if not behind:
                    break
                log.info(
                    "catching up with the write log",
                    partitions_behind=len(behind),
                    lag={number: self.log_lag(number) for number in self._shards},
                    seconds=round(time.monotonic() - started),
                )
        finally:
            for wait in waits:
                wait.cancel()
        log.info(
            "caught up with the write log",
            stream=self.config.stream,
            applied={number: self._positions(number) for number in self._shards},
            seconds=round(time.monotonic() - started, 3),
        )

    # --- one partition -----------------------------------------------------------------------------

    async def _follow(self, part: _Partition) -> None:
        """Apply one partition for ever; every failure resumes after the store's position."""
        failures = 0
        while True:
            sub: JetStreamContext.PullSubscription | None = None
            consumer = ""
            try:
                sub, consumer, delivered = await self._subscribe(part)
                while True:
                    try:
                        msgs = await sub.fetch(_BATCH, timeout=_IDLE_FETCH_SECONDS)
                    except nats.errors.TimeoutError:
                        # Nothing came: ask the consumer, which also notices one the server lost.
                        info = await sub.consumer_info()
                        if info.delivered is not None and info.delivered.consumer_seq != delivered:
                            raise _GapError(f"delivered {info.delivered.consumer_seq}, received {delivered}") from None
                        self._observe(part, info.num_pending or 0)
                        continue
                    first, last = msgs[0].metadata.sequence.consumer, msgs[-1].metadata.sequence.consumer
                    if first != delivered + 1 or last != delivered + len(msgs):
                        raise _GapError(f"received consumer sequences {first}..{last} after {delivered}")
                    delivered = last
                    await self._apply(part, msgs)
                    failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(_BACKOFF_MAX_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (failures - 1))
                # Until it follows again the partition is not known to be caught up: never report lag 0.
                self._observe(part, max(part.pending, 1))
                log.warning(
                    "following the write log failed; resuming after the last applied position",
                    shard=part.shard.number,
                    partition=part.number,
                    position=part.shard.log_position(part.number),
                    error=repr(exc),
                    retry_seconds=delay,
                )
                await asyncio.sleep(delay)
            finally:
                if sub is not None:
                    await self._drop(sub, self._layout.stream_of(part.number) if self._layout else "", consumer)

    async def _subscribe(self, part: _Partition) -> tuple[JetStreamContext.PullSubscription, str, int]:
        """A new consumer of the partition after the store's position: (subscription, name, delivered)."""
        assert self._js is not None and self._layout is not None
        position = part.shard.log_position(part.number)
        if position:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=position + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=_CONSUMER_INACTIVE_SECONDS,
            )
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=_CONSUMER_INACTIVE_SECONDS,
            )
        sub = await self._js.pull_subscribe(
            self._layout.partition_filter(part.number),
            durable=None,
            stream=self._layout.stream_of(part.number),
            config=config,
        )
        try:
            info = await sub.consumer_info()
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise
        self._observe(part, info.num_pending or 0)
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        return sub, info.name, delivered

    async def _drop(self, sub: JetStreamContext.PullSubscription, stream: str, consumer: str) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if self._js is not None and consumer:
            # Left alone it would expire after _CONSUMER_INACTIVE_SECONDS; removing it now is tidier.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._js.delete_consumer(stream, consumer), _DROP_TIMEOUT_SECONDS)

    def _observe(self, part: _Partition, pending: int) -> None:
        """Record what the server says is pending after the last applied message."""
        part.pending = pending
        if pending == 0:
            part.oldest = None
            part.caught_up.set()
        metrics.LOG_LAG_MESSAGES.labels(str(part.shard.number)).set(self.log_lag(part.shard.number))

    async def _apply(self, part: _Partition, msgs: list[Msg]) -> None:
        """Apply one fetched batch on the shard's apply thread, then publish its effect and wake readers."""
        raw: list[RawMessage] = [(m.subject, m.metadata.sequence.stream, m.data) for m in msgs]
        if part.oldest is None:
            # The batch starts right after the applied position: its first write is the oldest not applied.
            part.oldest = msgs[0].metadata.timestamp.timestamp()
        # Until it is applied, the batch in hand counts as lag too.
        self._observe(part, len(msgs) + msgs[-1].metadata.num_pending)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executors[part.shard.number], self._apply_blocking, part.shard, part.number, raw
        )
        label = str(part.shard.number)
        for op, count in result.applied.items():
            metrics.LOG_APPLIED.labels(label, op).inc(count)
        for reason, count in result.skipped.items():
            metrics.LOG_SKIPPED.labels(label, reason).inc(count)
        metrics.LOG_APPLIED_SEQUENCE.labels(label, str(part.number)).set(result.position)
        last = msgs[-1].metadata
        # The next write not applied is newer than the last applied one: its age is at most this.
        part.oldest = last.timestamp.timestamp()
        self._observe(part, last.num_pending)
        async with self._applied:
            self._applied.notify_all()

    def _apply_blocking(self, shard: Shard, partition: int, raw: list[RawMessage]) -> LogApplyResult:
        """Decode a batch and apply it to the shard (on the shard's apply thread)."""
        assert self._layout is not None
        writes: list[LogOp] = []
        skipped: dict[str, int] = {}
        for subject, sequence, data in raw:
            try:
                write = writelog.decode(subject, sequence, data)
            except (ValueError, DecodeError) as exc:
                skipped["undecodable"] = skipped.get("undecodable", 0) + 1
                log.warning(
                    "log message skipped: undecodable",
                    shard=shard.number,
                    partition=partition,
                    sequence=sequence,
                    error=str(exc),
                )
                continue
            if self._layout.subject(write.item.id) != subject:
                # An id published on another item's subject would be stored by a shard that does not own it.
                skipped["misrouted"] = skipped.get("misrouted", 0) + 1
                log.warning(
                    "log message skipped: its id belongs to another subject",
                    shard=shard.number,
                    partition=partition,
                    sequence=sequence,
                    subject=subject,
                )
                continue
            item = item_from_proto(write.item) if write.op == writelog.UPSERT else None
            writes.append(LogOp(sequence, write.item.id, write.model_id, item))
        result = shard.apply_log(partition, raw[-1][1], writes)
        if not skipped:
            return result
        for reason, count in result.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        return dataclasses.replace(result, skipped=skipped)

    # --- what readers and stats see ------------------------------------------------------------------

    def _positions(self, shard: int) -> dict[int, int]:
        return {p.number: p.shard.log_position(p.number) for p in self._shards.get(shard, ())}

    def log_lag(self, shard: int) -> int:
        """Writes of the shard's partitions in the log not applied yet (as last reported by the server)."""
        return sum(p.pending for p in self._shards.get(shard, ()))

    def lag_seconds(self, shard: int) -> float:
        """Age of the oldest write of the shard's partitions not applied yet; 0 when caught up."""
        now = time.time()
        ages = [now - p.oldest for p in self._shards.get(shard, ()) if p.oldest is not None]
        return max(0.0, *ages) if ages else 0.0

    def annotate(self, stats: ShardStats) -> ShardStats:
        """`stats` with the shard's applied positions and its lag behind the log."""
        return dataclasses.replace(
            stats,
            applied=tuple(sorted(self._positions(stats.shard).items())),
            log_lag=self.log_lag(stats.shard),
            log_lag_seconds=self.lag_seconds(stats.shard),
        )

    async def wait_applied(self, shard: int, after: Iterable[tuple[int, int]], timeout: float) -> None:
        """Return once the shard applied every (partition, sequence) of `after` it owns, within `timeout`.

        Positions of partitions the shard does not own are ignored. Raises ShardUnavailableError naming the
        partition, the applied and the wanted sequence when `timeout` passes first.
        """
        if self._layout is None:
            raise ShardUnavailableError(f"shard {shard} has not reached the write log yet; read another replica")
        parts = {p.number: p for p in self._shards.get(shard, ())}
        wanted: dict[int, int] = {}
        for partition, sequence in after:
            if partition in parts:
                wanted[partition] = max(wanted.get(partition, 0), sequence)

        def behind() -> tuple[int, int, int] | None:
            for partition, sequence in wanted.items():
                applied = parts[partition].shard.log_position(partition)
                if applied < sequence:
                    return partition, applied, sequence
            return None

        if behind() is None:
            return
        with contextlib.suppress(TimeoutError):
            async with self._applied:
                await asyncio.wait_for(self._applied.wait_for(lambda: behind() is None), max(timeout, 0.0))
        missing = behind()
        if missing is not None:
            partition, applied, sequence = missing
            raise ShardUnavailableError(
                f"shard {shard} has applied partition {partition} of the write log up to sequence {applied}, "
                f"not yet {sequence} (waited {max(timeout, 0.0):.3f} s); read another replica or retry"
            )
