"""The reshard driver: moves write-log partitions between shards online, one partition map version per phase.

`Resharder.run(N)` (the admin RPC `Reshard`, `crossmodal reshard --shards N`) walks the stored map to a
stable version in which partition p belongs to shard p % N (docs/architecture.md, "Resharding"):

1. stable v -> v+1, copying: `incoming` lists each moving partition's new shard. The new owners' replicas
   start following those partitions from the beginning of their streams (their watch on the map tells
   them); what they store is not answered for yet.
2. The driver reads each moving partition's last log sequence, then polls every replica of every new owner
   (GetShardStats) until each has applied its incoming partitions up to there, streaming progress
   (partitions caught up, items copied, lag).
3. v+1 -> v+2, draining (the flip): `owner` names the new shards, `outgoing` the old ones, which keep their
   copies. Searches planned at v+1 or earlier still find every partition at its old owner.
4. After `GATEWAY_RESHARD_GRACE_SECONDS` (longer than a search's deadline) -> v+3, stable: old owners drop
   the partitions they gave away.

Every step starts from the map as stored and changes it by compare-and-set, so the driver holds no state
of its own: kill any process at any point, run the same command again, and it continues from the stored
phase (a second driver of the same move is harmless: one of two writers of a version fails its CAS and
re-reads). Another shard count while a move is under way is refused with FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import grpc
import structlog
from nats.js import JetStreamContext

from crossmodal.v1 import gateway_pb2, index_pb2
from services.common import partitionmap
from services.common.partitionmap import (
    COPYING,
    DRAINING,
    MapConflictError,
    MapError,
    MapWatcher,
    PartitionMap,
    shard_count,
)
from services.common.writelog import LogLayout, log_status
from services.gateway.backends import ShardClient, fullest
from services.gateway.errors import GatewayError
from services.gateway.metrics import RESHARD_ITEMS_COPIED, RESHARD_LAG, RESHARD_PARTITIONS_MOVING

log = structlog.get_logger("gateway.reshard")

# How often the catch-up wait polls the new owners' replicas.
_POLL_SECONDS = 0.5
# How often progress is streamed (and logged) while nothing else happens.
_PROGRESS_SECONDS = 2.0
# A replica's GetShardStats deadline.
_STATS_TIMEOUT_SECONDS = 5.0
NO_LOG = (
    "resharding needs the write log: a partition's new shard replays it from there. Start the cluster with "
    "one (`crossmodal up --log single`, or --replicas 2), or set CROSSMODAL_LOG_URL on the gateway and every "
    "index replica"
)

# (shard, replica address) -> that replica's stats of the shard, or None when it did not answer.
ReplicaStats = dict[tuple[int, str], index_pb2.ShardStats | None]


def original_owner(current: PartitionMap) -> tuple[int, ...]:
    """Who owned each partition before the move `current` is part of (its owner when stable)."""
    owner = list(current.owner)
    for partition, shard in current.outgoing.items():
        owner[partition] = shard
    return tuple(owner)


def moving(current: PartitionMap, shards: int) -> dict[int, int]:
    """The partitions of the move: {partition: new shard}, whichever phase the map is in."""
    if current.phase == COPYING:
        return dict(current.incoming)
    if current.phase == DRAINING:
        return {p: current.owner[p] for p in current.outgoing}
    return partitionmap.plan(current, shards)


class Resharder:
    """Drives reshards from this gateway; see the module docstring."""

    def __init__(
        self,
        shards: list[ShardClient],
        watcher: MapWatcher,
        js: JetStreamContext,
        layout: LogLayout,
        grace_seconds: float,
    ) -> None:
        self.shards = shards
        self.watcher = watcher
        self.js = js
        self.layout = layout
        self.grace_seconds = grace_seconds
        # One driver per gateway at a time (a rerun waits for an abandoned one to notice its cancellation).
        self._lock = asyncio.Lock()

    async def _read(self) -> tuple[PartitionMap, int]:
        try:
            found = await partitionmap.read(self.watcher.kv)
        except MapError as exc:
            raise GatewayError(grpc.StatusCode.INTERNAL, f"the stored partition map is damaged: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the log's failure, reported as retryable
            raise GatewayError(*log_status(exc, "reading the partition map")) from None
        if found is None:
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, "the partition map does not exist yet; retry")
        return found

    def _check(self, current: PartitionMap, shards: int) -> None:
        if not 1 <= shards <= current.partitions:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"--shards {shards}: 1 to the write log's {current.partitions} partitions",
            )
        if shards > len(self.shards):
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"--shards {shards}: this gateway has addresses for {len(self.shards)} shards. Start the index "
                f"processes of shards {len(self.shards)} to {shards - 1} first and list them in "
                "CROSSMODAL_GATEWAY_SHARDS (Helm: raise index.shards; locally: `crossmodal up --shards N` on the "
                "same data directory), then run the reshard",
            )
        if current.target is not None and current.target != shards:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"a reshard to {shard_count(current.target)} is under way "
                f"(partition map {current.describe()}); "
                f"finish it first with `crossmodal reshard --shards {current.target}`",
            )

    async def run(self, shards: int, dry_run: bool) -> AsyncIterator[gateway_pb2.ReshardProgress]:
        """Move the partitions to `shards` shards (or only plan it), streaming progress; see the module docstring."""
        current, _ = await self._read()
        self._check(current, shards)
        yield await self._plan(current, shards, dry_run)
        if dry_run:
            return
        async with self._lock:
            started = time.monotonic()
            while True:
                current, revision = await self._read()
                self._check(current, shards)
                try:
                    if current.phase == COPYING:
                        async for progress in self._catch_up(current, shards):
                            yield progress
                        new = partitionmap.flip(current)
                    elif current.phase == DRAINING:
                        yield self._progress(
                            current,
                            shards,
                            f"map flipped to version {current.version}; old owners keep the moved partitions for "
                            f"{self.grace_seconds:g} s so searches planned before the flip finish",
                        )
                        await asyncio.sleep(self.grace_seconds)
                        new = partitionmap.finish(current)
                    elif partitionmap.plan(current, shards):
                        new = partitionmap.start_move(current, shards)
                    else:
                        break
                    await self._write(new, revision)
                except MapConflictError:
                    continue  # another driver wrote the next version first: carry on from it
            RESHARD_PARTITIONS_MOVING.set(0)
            RESHARD_LAG.set(0)
            log.info("reshard done", map=current.describe(), seconds=round(time.monotonic() - started, 3))
            yield self._progress(
                current, shards, f"done: {shard_count(len(current.shards))} own the partitions", "done"
            )

    async def _write(self, new: PartitionMap, revision: int) -> None:
        try:
            stored = await partitionmap.write(self.watcher.kv, new, revision)
        except MapConflictError:
            raise
        except Exception as exc:  # noqa: BLE001 - the log's failure, reported as retryable (rerun to resume)
            raise GatewayError(*log_status(exc, "writing the partition map")) from None
        log.info("partition map written", map=new.describe(), revision=stored)
        await self.watcher.observe(new)

    def _progress(
        self,
        current: PartitionMap,
        shards: int,
        message: str,
        phase: str = "",
        *,
        partitions_caught_up: int = 0,
        items_copied: int = 0,
        lag: int = 0,
    ) -> gateway_pb2.ReshardProgress:
        return gateway_pb2.ReshardProgress(
            phase=phase or current.phase,
            map_version=current.version,
            shards=shards,
            partitions_moving=len(moving(current, shards)) if phase != "done" else 0,
            message=message,
            partitions_caught_up=partitions_caught_up,
            items_copied=items_copied,
            lag=lag,
        )

    async def _plan(self, current: PartitionMap, shards: int, dry_run: bool) -> gateway_pb2.ReshardProgress:
        """The first message: per shard, partitions before and after and the items that move."""
        before = original_owner(current)
        moves = moving(current, shards)
        after = list(before)
        for partition, shard in moves.items():
            after[partition] = shard
        stats = await self._stats(range(len(self.shards)))
        items = _fullest(stats)
        rows = []
        for shard in sorted(set(before) | set(after)):
            rows.append(
                gateway_pb2.ReshardShardPlan(
                    shard=shard,
                    partitions_before=before.count(shard),
                    partitions_after=after.count(shard),
                    items_before=sum(n for p, n in items.get(shard, {}).items() if before[p] == shard),
                    items_incoming=sum(_items_of(items, before[p], p) for p, s in moves.items() if s == shard),
                    items_outgoing=sum(_items_of(items, shard, p) for p, s in moves.items() if before[p] == shard),
                )
            )
        if not moves:
            text = f"nothing to move: the partitions are already spread over {shard_count(shards)}"
        else:
            text = f"{len(moves)} of {current.partitions} partitions move to reach {shard_count(shards)}"
            if current.phase != partitionmap.STABLE:
                text += f" (resuming the move under way, at {current.describe()})"
        if dry_run:
            text += "; dry run: nothing changed"
        return gateway_pb2.ReshardProgress(
            phase="plan",
            map_version=current.version,
            shards=shards,
            partitions_moving=len(moves),
            message=text,
            plan=rows,
        )

    async def _catch_up(self, current: PartitionMap, shards: int) -> AsyncIterator[gateway_pb2.ReshardProgress]:
        """Wait until every replica of each new owner applied its incoming partitions up to their last sequence."""
        targets: dict[int, int] = {}
        for partition in current.incoming:
            try:
                info = await self.js.stream_info(self.layout.stream_of(partition))
            except Exception as exc:  # noqa: BLE001 - the log's failure, reported as retryable
                raise GatewayError(*log_status(exc, f"reading partition {partition}'s stream")) from None
            targets[partition] = int(info.state.last_seq)
        RESHARD_PARTITIONS_MOVING.set(len(targets))
        owners = sorted(set(current.incoming.values()))
        last_report = -_PROGRESS_SECONDS
        last_done = -1
        while True:
            stats = await self._stats(owners)
            done, copied, lag, silent = 0, 0, 0, []
            for partition, shard in current.incoming.items():
                replicas = [(address, s) for (n, address), s in stats.items() if n == shard]
                behind = 0
                most = 0
                for address, replica in replicas:
                    if replica is None:
                        silent.append(address)
                        behind = max(behind, targets[partition])
                        continue
                    applied = dict((p.partition, p.sequence) for p in replica.applied).get(partition, 0)
                    behind = max(behind, targets[partition] - min(applied, targets[partition]))
                    most = max(most, replica.partition_items.get(partition, 0))
                done += behind == 0
                copied += most
                lag += behind
            RESHARD_ITEMS_COPIED.set(copied)
            RESHARD_LAG.set(lag)
            now = time.monotonic()
            if done == len(targets) or done != last_done or now - last_report >= _PROGRESS_SECONDS:
                last_done, last_report = done, now
                text = f"copying: {done}/{len(targets)} partitions caught up, {copied} items copied, lag {lag}"
                if silent:
                    text += f"; waiting for replicas that do not answer: {', '.join(sorted(set(silent)))}"
                log.info("reshard progress", map=current.version, caught_up=done, items_copied=copied, lag=lag)
                yield self._progress(current, shards, text, partitions_caught_up=done, items_copied=copied, lag=lag)
            if done == len(targets):
                return
            await asyncio.sleep(_POLL_SECONDS)

    async def _stats(self, numbers: range | list[int]) -> ReplicaStats:
        """GetShardStats of every replica of the shards `numbers`, at once; None for one that did not answer."""
        keys = [(n, replica) for n in numbers for replica in self.shards[n].replicas]
        answers = await asyncio.gather(
            *(self.shards[n].replica_stats(replica, _STATS_TIMEOUT_SECONDS) for n, replica in keys)
        )
        return {
            (n, replica.address): answer if isinstance(answer, index_pb2.ShardStats) else None
            for (n, replica), answer in zip(keys, answers, strict=True)
        }


def _fullest(stats: ReplicaStats) -> dict[int, Mapping[int, int]]:
    """Per shard, the partition item counts of its fullest answering replica."""
    by_shard: dict[int, list[index_pb2.ShardStats | None]] = {}
    for (shard, _), replica in stats.items():
        by_shard.setdefault(shard, []).append(replica)
    return {
        shard: dict(best.partition_items)
        for shard, answers in by_shard.items()
        if (best := fullest(answers)) is not None
    }


def _items_of(items: Mapping[int, Mapping[int, int]], shard: int, partition: int) -> int:
    return int(items.get(shard, {}).get(partition, 0))
