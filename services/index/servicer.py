"""The gRPC servicer of crossmodal.v1.IndexService: request limits, proto <-> domain, status codes.

Every RPC converts its request and calls the shard on a worker thread (store commits fsync, USearch
calls are native and long): the event loop only parses, dispatches and answers. Domain errors become
status codes in `_STATUS_CODES` and nowhere else; the contract's limits are `services.common.limits`.

In log mode (a `LogFollower` is given) the replica's writes come from the write log only: direct
writes are refused, reads with `after` positions first wait for the follower, and stats carry the
applied positions and the lag. A search or read that names a partition map version is answered from the
partitions the shard owns at that version only (`LogFollower.partitions_at`), or ABORTED when the shard
cannot (the gateway then re-reads the map and plans again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, TypeVar, cast

import grpc
import numpy as np
import structlog

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from services.common.limits import LimitError, Limits
from services.index.domain import Hit, SearchQuery, item_from_proto, make_filter
from services.index.errors import (
    IndexServiceError,
    InvalidArgumentError,
    MapVersionError,
    PreconditionError,
    ShardUnavailableError,
    StorageFullError,
    UnknownShardError,
)
from services.index.follower import LogFollower
from services.index.shard import Shard

log = structlog.get_logger("index.servicer")

R = TypeVar("R")

# What a caller can act on: the index's own errors and the contract's limits.
CallerError = IndexServiceError | LimitError

_STATUS_CODES: tuple[tuple[type[CallerError], grpc.StatusCode], ...] = (
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (LimitError, grpc.StatusCode.INVALID_ARGUMENT),
    (PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownShardError, grpc.StatusCode.NOT_FOUND),
    # Not retried on another replica: the caller re-reads the partition map and plans the call again.
    (MapVersionError, grpc.StatusCode.ABORTED),
    (ShardUnavailableError, grpc.StatusCode.UNAVAILABLE),
    # Retryable: the write was rolled back and succeeds once space is freed.
    (StorageFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


# A read with `after` positions but no deadline waits at most this long for the follower.
_AFTER_WAIT_WITHOUT_DEADLINE = 10.0
# Answer UNAVAILABLE this long (at most a fifth of the time left) before the caller's deadline, so that
# the caller gets the reason and still has time to ask another replica.
_AFTER_WAIT_MARGIN = 0.05

LOG_MODE_WRITE_REFUSAL = "this replica applies the write log (CROSSMODAL_LOG_URL); write through the gateway"


def status_code_for(error: CallerError) -> grpc.StatusCode:
    """The gRPC status code that reports `error`."""
    for cls, code in _STATUS_CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


class ShardSet:
    """The shards this process serves, by number; empty until the service has loaded them."""

    def __init__(self, numbers: tuple[int, ...]) -> None:
        self.numbers = numbers
        self.shards: dict[int, Shard] = {}

    def get(self, number: int) -> Shard:
        """The loaded shard `number`; NOT_FOUND when not served here, UNAVAILABLE while loading."""
        shard = self.shards.get(number)
        if shard is not None:
            return shard
        if number not in self.numbers:
            served = ",".join(str(n) for n in self.numbers)
            raise UnknownShardError(f"shard {number} is not served by this process (it serves {served})")
        raise ShardUnavailableError(f"shard {number} is not loaded yet")


def _vector(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _modality(value: int) -> types_pb2.Modality:
    return cast(types_pb2.Modality, value)


def _hit_proto(hit: Hit) -> index_pb2.SearchHit:
    return index_pb2.SearchHit(
        id=hit.id,
        score=hit.score,
        modality=_modality(hit.modality),
        metadata=dict(hit.metadata),
        tags=list(hit.tags),
        vector=hit.vector.tolist() if hit.vector is not None else [],
    )


def _batch_failure(exc: Exception) -> index_pb2.SearchShardBatchResult:
    """The status one search of a batch gets for `exc`: what SearchShard would have answered."""
    if isinstance(exc, IndexServiceError | LimitError):
        code, message = status_code_for(exc), str(exc)
    else:
        log.exception("index call failed", error=repr(exc))
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
    return index_pb2.SearchShardBatchResult(status=types_pb2.ItemStatus(code=code.value[0], message=message))


class IndexServicer(index_pb2_grpc.IndexServiceServicer):
    """Validates requests, runs them on the shards off the event loop and maps errors to status codes."""

    def __init__(
        self, shards: ShardSet, limits: Limits, executor: Executor, follower: LogFollower | None = None
    ) -> None:
        self._shards = shards
        self._limits = limits
        self._executor = executor
        self._follower = follower

    async def _run(
        self, context: grpc.aio.ServicerContext, fn: Callable[..., R], *args: Any, inline: bool = False
    ) -> R:
        loop = asyncio.get_running_loop()
        try:
            if inline:
                return fn(*args)
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except (IndexServiceError, LimitError) as exc:
            await context.abort(status_code_for(exc), str(exc))
        except Exception as exc:
            log.exception("index call failed", error=repr(exc))
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        raise AssertionError("unreachable: context.abort raises")

    async def _wait_after(
        self, context: grpc.aio.ServicerContext, shard: int, after: Iterable[types_pb2.LogPosition]
    ) -> None:
        """Wait until the shard applied the `after` positions it owns (log mode; direct mode has no log)."""
        positions = [(p.partition, p.sequence) for p in after]
        if not positions or self._follower is None:
            return
        try:
            await self._wait_positions(shard, positions, context.time_remaining())
        except IndexServiceError as exc:
            await context.abort(status_code_for(exc), str(exc))

    async def _wait_positions(self, shard: int, positions: list[tuple[int, int]], remaining: float | None) -> None:
        """Wait until `shard` applied `positions`; raises IndexServiceError when it cannot in time."""
        if not positions or self._follower is None:
            return
        budget = (
            _AFTER_WAIT_WITHOUT_DEADLINE if remaining is None else remaining - min(_AFTER_WAIT_MARGIN, remaining / 5)
        )
        self._shards.get(shard)
        await self._follower.wait_applied(shard, positions, budget)

    async def _partitions(self, shard: int, map_version: int) -> frozenset[int] | None:
        """The partitions a call planned at `map_version` may be answered from (None: all the shard stores)."""
        if not map_version or self._follower is None:
            return None
        return await self._follower.partitions_at(shard, map_version)

    async def _partitions_or_abort(
        self, context: grpc.aio.ServicerContext, shard: int, map_version: int
    ) -> frozenset[int] | None:
        try:
            return await self._partitions(shard, map_version)
        except IndexServiceError as exc:
            await context.abort(status_code_for(exc), str(exc))
        raise AssertionError("unreachable: context.abort raises")

    # --- RPCs --------------------------------------------------------------------------------

    async def UpsertVectors(
        self, request: index_pb2.UpsertVectorsRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.UpsertVectorsResponse:
        """Insert or replace items; per-item statuses, acknowledged after the commit."""
        return await self._run(context, self._upsert, request)

    async def DeleteVectors(
        self, request: index_pb2.DeleteVectorsRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.DeleteVectorsResponse:
        """Delete items by id."""
        return await self._run(context, self._delete, request)

    async def GetVectors(
        self, request: index_pb2.GetVectorsRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.GetVectorsResponse:
        """Fetch stored items by id (after the `after` log positions were applied)."""
        await self._wait_after(context, request.shard, request.after)
        # Routed at an older map: the shard must still hold what it owned then, or the ids would read as missing.
        await self._partitions_or_abort(context, request.shard, request.map_version)
        return await self._run(context, self._get, request)

    async def SearchShard(
        self, request: index_pb2.SearchShardRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.SearchShardResponse:
        """Top-K search on one shard (after the `after` log positions were applied)."""
        await self._wait_after(context, request.shard, request.after)
        partitions = await self._partitions_or_abort(context, request.shard, request.map_version)
        # A plain graph search takes well under a millisecond, less than the hop to a worker thread: the
        # shard runs it here when it can (see Shard.try_search), and everything else on a thread.
        response = await self._run(context, self._try_search, request, partitions, inline=True)
        if response is not None:
            return response
        return await self._run(context, self._search, request, partitions)

    async def SearchShardBatch(
        self, request: index_pb2.SearchShardBatchRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.SearchShardBatchResponse:
        """Several top-K searches in one call, each answered with its own status."""
        try:
            self._limits.check_batch(len(request.searches), "searches")
        except LimitError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        results: list[index_pb2.SearchShardBatchResult] = []
        later: list[int] = []
        for position, search in enumerate(request.searches):
            response = None
            if not search.after:
                try:
                    response = self._try_search(search, await self._partitions(search.shard, search.map_version))
                except Exception as exc:
                    results.append(_batch_failure(exc))
                    continue
            if response is None:
                later.append(position)  # its result is filled in below
            results.append(index_pb2.SearchShardBatchResult(response=response))
        if later:
            # Filtered, exact or reranked searches, those behind a writer, and those waiting for log positions.
            remaining = context.time_remaining()
            answers = await asyncio.gather(*(self._search_later(request.searches[p], remaining) for p in later))
            for position, answer in zip(later, answers, strict=True):
                results[position] = answer
        return index_pb2.SearchShardBatchResponse(results=results)

    async def _search_later(
        self, search: index_pb2.SearchShardRequest, remaining: float | None
    ) -> index_pb2.SearchShardBatchResult:
        try:
            await self._wait_positions(search.shard, [(p.partition, p.sequence) for p in search.after], remaining)
            partitions = await self._partitions(search.shard, search.map_version)
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(self._executor, self._search, search, partitions)
        except Exception as exc:
            return _batch_failure(exc)
        return index_pb2.SearchShardBatchResult(response=response)

    async def GetShardStats(
        self, request: index_pb2.GetShardStatsRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.GetShardStatsResponse:
        """Statistics of every served shard."""
        return await self._run(context, self._stats)

    async def CreateSnapshot(
        self, request: index_pb2.CreateSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> index_pb2.CreateSnapshotResponse:
        """Write a snapshot of one shard now (after a pending graph rebuild); never OK without one."""
        return await self._run(context, self._snapshot, request)

    # --- blocking bodies (worker threads) -----------------------------------------------------

    def _refuse_in_log_mode(self) -> None:
        if self._follower is not None:
            raise PreconditionError(LOG_MODE_WRITE_REFUSAL)

    def _upsert(self, request: index_pb2.UpsertVectorsRequest) -> index_pb2.UpsertVectorsResponse:
        shard = self._shards.get(request.shard)
        self._refuse_in_log_mode()
        self._limits.check_batch(len(request.items), "items")
        items = [item_from_proto(it) for it in request.items]
        result = shard.upsert(request.model_id, items)
        statuses = [
            types_pb2.ItemStatus()
            if error is None
            else types_pb2.ItemStatus(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error)
            for error in result.errors
        ]
        return index_pb2.UpsertVectorsResponse(statuses=statuses, version=result.version)

    def _delete(self, request: index_pb2.DeleteVectorsRequest) -> index_pb2.DeleteVectorsResponse:
        shard = self._shards.get(request.shard)
        self._refuse_in_log_mode()
        self._limits.check_batch(len(request.ids))
        deleted, version = shard.delete(list(request.ids))
        return index_pb2.DeleteVectorsResponse(deleted=deleted, version=version)

    def _get(self, request: index_pb2.GetVectorsRequest) -> index_pb2.GetVectorsResponse:
        shard = self._shards.get(request.shard)
        self._limits.check_batch(len(request.ids))
        items, missing = shard.get(list(request.ids), request.include_vectors)
        return index_pb2.GetVectorsResponse(
            items=[
                index_pb2.IndexItem(
                    id=it.id,
                    modality=_modality(it.modality),
                    metadata=dict(it.metadata),
                    tags=list(it.tags),
                    version=it.version,
                    vector=it.vector.tolist() if it.vector is not None else [],
                )
                for it in items
            ],
            missing=missing,
        )

    def _search(
        self, request: index_pb2.SearchShardRequest, partitions: frozenset[int] | None = None
    ) -> index_pb2.SearchShardResponse:
        response = self._search_on(request, partitions, wait=True)
        assert response is not None
        return response

    def _try_search(
        self, request: index_pb2.SearchShardRequest, partitions: frozenset[int] | None = None
    ) -> index_pb2.SearchShardResponse | None:
        """The search if the shard can answer it at once (`Shard.try_search`); None otherwise."""
        return self._search_on(request, partitions, wait=False)

    def _search_on(
        self, request: index_pb2.SearchShardRequest, partitions: frozenset[int] | None, wait: bool
    ) -> index_pb2.SearchShardResponse | None:
        shard = self._shards.get(request.shard)
        self._limits.check_k(request.k)
        flt = request.filter
        query = SearchQuery(
            vector=_vector(request.vector),
            k=request.k,
            filter=make_filter(
                request.modality,
                [(c.key, c.any_of) for c in flt.clauses],
                flt.tags_all,
                flt.tags_any,
                modalities=request.modalities,
            ),
            exact=request.exact,
            include_vectors=request.include_vectors,
            model_id=request.model_id,
        )
        if partitions is not None:
            query = dataclasses.replace(query, filter=dataclasses.replace(query.filter, partitions=partitions))
        result = shard.search(query) if wait else shard.try_search(query)
        if result is None:
            return None
        return index_pb2.SearchShardResponse(hits=[_hit_proto(hit) for hit in result.hits], examined=result.examined)

    def _stats(self) -> index_pb2.GetShardStatsResponse:
        out = []
        for number in self._shards.numbers:
            s = self._shards.get(number).stats()
            if self._follower is not None:
                s = self._follower.annotate(s)
            out.append(
                index_pb2.ShardStats(
                    shard=s.shard,
                    count=s.count,
                    deleted=s.deleted,
                    memory_bytes=s.memory_bytes,
                    snapshot_age_seconds=s.snapshot_age_seconds,
                    snapshot_version=s.snapshot_version,
                    version=s.version,
                    model_id=s.model_id,
                    dim=s.dim,
                    dtype=s.dtype,
                    applied=[types_pb2.LogPosition(partition=p, sequence=q) for p, q in s.applied],
                    log_lag=s.log_lag,
                    log_lag_seconds=s.log_lag_seconds,
                    map_version=s.map_version,
                    partition_items=dict(s.partition_items),
                )
            )
        return index_pb2.GetShardStatsResponse(shards=out)

    def _snapshot(self, request: index_pb2.CreateSnapshotRequest) -> index_pb2.CreateSnapshotResponse:
        version, seconds = self._shards.get(request.shard).snapshot()
        return index_pb2.CreateSnapshotResponse(version=version, seconds=seconds)
