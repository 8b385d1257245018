"""The write-log follower: how an index replica in log mode gets its writes (docs/architecture.md, "The write log").

With CROSSMODAL_LOG_URL set, the gateway publishes every write to NATS JetStream and no replica is written
directly. This follower connects, waits for the log's streams (one per partition) and its partition map
(`services/common/partitionmap.py`), and for every partition each served shard holds at the map's latest
version (owns, or receives or gives away during a reshard: `PartitionMap.held`) runs one loop: an
ephemeral pull consumer of the partition's stream that starts right after the sequence the shard's store
recorded (or at the beginning for a partition it never applied), fetches batches (up to `_BATCH`
messages: whatever is there, or the first write that arrives while waiting), and hands each batch to
`Shard.apply_log` on the shard's own apply thread. The store commits the batch's items and the
partition's new position in one transaction (`shard.py` explains why that makes kill -9 safe).

The map is watched: a new version adds loops for partitions a reshard moves here (replayed from the
beginning of their streams, stored but not answered for until the map says so) and, once a version no
longer lists a partition for a shard at all, stops its loop and drops its items and position
(`Shard.drop_partition`). A shard that holds nothing (a spare one, before a reshard) is SERVING with no
loop. `partitions_at` tells the servicer which partitions a search planned at a given map version may be
answered from.

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

from services.common import partitionmap, writelog
from services.common.partitionmap import MapWatcher, PartitionMap
from services.common.writelog import LogConfig, LogLayout
from services.index import metrics
from services.index.domain import LogApplyResult, LogOp, ShardStats, item_from_proto
from services.index.errors import MapVersionError, PreconditionError, ShardUnavailableError
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
# A search planned at a map version newer than this replica knows waits this long for the watch to bring it.
_NEWER_MAP_WAIT_SECONDS = 1.0
# How long a reconciliation waits for the loops of partitions moved away to finish their clean-up.
_STOP_TIMEOUT_SECONDS = 5.0

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
    task: asyncio.Task[None] | None = None


class LogFollower:
    """Applies the write-log partitions of every served shard, in order; see the module docstring."""

    def __init__(self, config: LogConfig, name: str = "crossmodal-index") -> None:
        self.config = config
        self._name = name
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._layout: LogLayout | None = None
        self._watcher: MapWatcher | None = None
        self._served: dict[int, Shard] = {}
        # One reconciliation at a time: the start and the map watch's listener may both ask for one.
        self._reconciling = asyncio.Lock()
        self._reconciled = 0  # the map version the loops follow; never goes back
        # The map watch only records the newest version and wakes the reconciler task: a reconciliation
        # waits for loops to stop and drops data, and must never hold up the watch (or a search that asks
        # it for a version).
        self._newest: PartitionMap | None = None
        self._map_moved = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None
        # Loops of partitions moved away, cancelled and finishing their clean-up.
        self._retired: set[asyncio.Task[None]] = set()
        # shard -> partition -> its loop, for every partition the shard holds at the latest map.
        self._shards: dict[int, dict[int, _Partition]] = {}
        self._executors: dict[int, ThreadPoolExecutor] = {}
        # Signalled after every applied batch; reads waiting for `after` positions wait on it.
        self._applied = asyncio.Condition()

    # --- life cycle ------------------------------------------------------------------------------

    async def start(self, shards: Mapping[int, Shard]) -> None:
        """Connect, wait for the stream and the map, follow every held partition; return once all were caught up."""
        self._nc = await self._connect()
        self._js = self._nc.jetstream(timeout=self.config.timeout_seconds)
        layout = await self._wait_for_stream(self._js)
        assert layout.placement.partitions is not None
        self._watcher = MapWatcher(await self._open_map(self._js, layout))
        current = await self._watcher.start()
        self._layout = layout
        self._served = dict(shards)
        for number, shard in shards.items():
            label = str(number)
            self._executors[number] = ThreadPoolExecutor(1, thread_name_prefix=f"index-log-{number}")
            # It rebuilds the shard's catalog (seconds for millions of items): not on the event loop, which
            # answers health checks and SIGTERM meanwhile.
            await asyncio.get_running_loop().run_in_executor(
                self._executors[number], shard.use_partitions, layout.placement.partitions
            )
            self._shards[number] = {}
            metrics.LOG_LAG_SECONDS.labels(label).set_function(functools.partial(self.lag_seconds, number))
        await self._check(self._js, layout, current)
        await self._reconcile(current)
        self._watcher.listeners.append(self._map_changed)
        self._reconciler = asyncio.create_task(self._reconcile_changes(), name="log-reconcile")
        # A version that came while the listener was not there yet.
        await self._map_changed(self._watcher.current or current)
        log.info("partition map", map=current.describe(), held={n: sorted(current.held(n)) for n in shards})
        await self._wait_caught_up()

    async def stop(self) -> None:
        """Stop following, let a batch being applied finish, and close the connection."""
        if self._watcher is not None:
            await self._watcher.stop()
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
        tasks = [p.task for parts in self._shards.values() for p in parts.values() if p.task is not None]
        tasks.extend(self._retired)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    async def _open_map(self, js: JetStreamContext, layout: LogLayout) -> partitionmap.KeyValue:
        """The partition map's bucket; made here, as the gateway would, for a log that has none yet.

        A log made before partition maps existed gets version 1 from its description (partition p to shard
        p % shards): whichever process writes it first, the others read the same document.
        """
        assert layout.placement.partitions is not None
        started = time.monotonic()
        last_log = -_PROGRESS_SECONDS
        while True:
            try:
                replicas = (await js.stream_info(layout.stream_of(0))).config.num_replicas or 1
                kv = await partitionmap.open_bucket(js, self.config.stream, replicas, create=True)
                await partitionmap.ensure(kv, layout.placement.partitions, layout.placement.shards)
                return kv
            except (nats.errors.Error, TimeoutError) as exc:
                reason = f"the log did not answer ({exc!r})"
            if time.monotonic() - last_log >= _PROGRESS_SECONDS:
                last_log = time.monotonic()
                log.warning("waiting for the partition map", reason=reason, seconds=round(last_log - started))
            await asyncio.sleep(0.25)

    async def _check(self, js: JetStreamContext, layout: LogLayout, current: PartitionMap) -> None:
        """Refuse to start with a store ahead of its partition's stream, or a map of another partition count."""
        if current.partitions != layout.placement.partitions:
            raise PreconditionError(
                f"the partition map has {current.partitions} partitions but the write log {layout.stream} has "
                f"{layout.placement.partitions}"
            )
        for number, shard in self._served.items():
            for partition in current.held(number):
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

    async def _map_changed(self, new: PartitionMap) -> None:
        """The map watch's listener: note the version and wake the reconciler."""
        if self._newest is None or new.version > self._newest.version:
            self._newest = new
        self._map_moved.set()

    async def _reconcile_changes(self) -> None:
        """Bring the loops to the newest map version each time it moves; a failure is retried in a second."""
        while True:
            await self._map_moved.wait()
            self._map_moved.clear()
            newest = self._newest
            if newest is None:
                continue
            try:
                await self._reconcile(newest)
            except Exception:  # noqa: BLE001 - logged; the next attempt starts from the map again
                log.exception("following the partition map failed; retrying", map=newest.version)
                await asyncio.sleep(1.0)
                self._map_moved.set()

    async def _reconcile(self, current: PartitionMap) -> None:
        """Follow exactly the partitions each shard holds at `current`: start new loops, stop and drop the rest.

        Also drops what a store holds of partitions the map gives it no more (a crash between a reshard's
        last map version and the drop): the map, not the store, says what a shard keeps.
        """
        async with self._reconciling:
            if current.version >= self._reconciled:
                await self._reconcile_locked(current)
                self._reconciled = current.version

    async def _reconcile_locked(self, current: PartitionMap) -> None:
        loop = asyncio.get_running_loop()
        for number, shard in self._served.items():
            parts = self._shards[number]
            wanted = current.held(number)
            for partition in sorted(wanted - set(parts)):
                part = _Partition(shard, partition)
                parts[partition] = part
                metrics.LOG_APPLIED_SEQUENCE.labels(str(number), str(partition)).set(shard.log_position(partition))
                part.task = asyncio.create_task(self._follow(part), name=f"log-{number}-{partition}")
                if current.version > 1 and partition in current.incoming:
                    log.info("partition incoming: replaying it", shard=number, partition=partition, map=current.version)
            stale = set(parts) - wanted
            stopping = []
            for partition in sorted(stale):
                part = parts.pop(partition)
                if part.task is not None:
                    part.task.cancel()
                    stopping.append(part.task)
            for task in stopping:
                # Held until done: a task nobody references may be collected before its clean-up ran.
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
            if stopping:
                # A cancelled loop applies nothing more (its last batch, if any, is already queued on the apply
                # thread, ahead of the drops below); waiting is only for its consumer clean-up, so it is bounded.
                await asyncio.wait(stopping, timeout=_STOP_TIMEOUT_SECONDS)
            # Whatever the store still holds outside the map (a loop stopped above, or left by a crash).
            present = await loop.run_in_executor(self._executors[number], shard.held_partitions)
            for partition in sorted(present - wanted):
                items = await loop.run_in_executor(self._executors[number], shard.drop_partition, partition)
                with contextlib.suppress(KeyError):
                    metrics.LOG_APPLIED_SEQUENCE.remove(str(number), str(partition))
                metrics.PARTITIONS_DROPPED.labels(str(number)).inc()
                log.info(
                    "partition moved away: dropped", shard=number, partition=partition, items=items, map=current.version
                )
            metrics.LOG_LAG_MESSAGES.labels(str(number)).set(self.log_lag(number))
        metrics.MAP_VERSION.set(current.version)

    async def _wait_caught_up(self) -> None:
        started = time.monotonic()
        waits = [asyncio.ensure_future(p.caught_up.wait()) for parts in self._shards.values() for p in parts.values()]
        try:
            while waits:  # a spare shard holds no partition: nothing to wait for
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
                    # Shielded: a loop cancelled by a reshard still removes its consumer.
                    stream = self._layout.stream_of(part.number) if self._layout else ""
                    await asyncio.shield(self._drop(sub, stream, consumer))

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
            await asyncio.wait_for(sub.unsubscribe(), _DROP_TIMEOUT_SECONDS)
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
        return {p.number: p.shard.log_position(p.number) for p in self._shards.get(shard, {}).values()}

    def log_lag(self, shard: int) -> int:
        """Writes of the shard's partitions in the log not applied yet (as last reported by the server)."""
        return sum(p.pending for p in self._shards.get(shard, {}).values())

    def lag_seconds(self, shard: int) -> float:
        """Age of the oldest write of the shard's partitions not applied yet; 0 when caught up."""
        now = time.time()
        ages = [now - p.oldest for p in self._shards.get(shard, {}).values() if p.oldest is not None]
        return max(0.0, *ages) if ages else 0.0

    @property
    def map_version(self) -> int:
        """The latest partition map version this replica knows (0 before it read the map)."""
        current = self._watcher.current if self._watcher is not None else None
        return current.version if current is not None else 0

    async def partitions_at(self, shard: int, version: int) -> frozenset[int] | None:
        """The partitions `shard` answers for in a search planned at map `version` (0: all it stores).

        Raises MapVersionError (ABORTED: the gateway re-reads the map and plans again) for a version this
        replica cannot learn, or one at which the shard owned partitions it no longer holds (dropped by a
        reshard that finished after the search was planned).
        """
        if version == 0 or self._watcher is None:
            return None
        at = self._watcher.at(version)
        if at is None:
            at = await self._watcher.find(version, _NEWER_MAP_WAIT_SECONDS)
        if at is None:
            raise MapVersionError(
                f"shard {shard} does not know partition map version {version} (its latest is {self.map_version}); "
                "re-read the map and search again"
            )
        owned = at.owned(shard)
        missing = owned - set(self._shards.get(shard, {}))
        if missing:
            raise MapVersionError(
                f"shard {shard} no longer holds partitions {sorted(missing)[:8]} that it owned at partition map "
                f"version {version} (it is at version {self.map_version}); re-read the map and search again"
            )
        return owned

    def annotate(self, stats: ShardStats) -> ShardStats:
        """`stats` with the shard's applied positions and its lag behind the log."""
        return dataclasses.replace(
            stats,
            map_version=self.map_version,
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
        parts = dict(self._shards.get(shard, {}))
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
