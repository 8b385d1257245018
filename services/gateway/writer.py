"""The write path: how an encoded item or a delete gets stored, with the log or without.

- `LogWriter` (a write log is configured): each write is published to the item's partition of the
  replicated log on NATS JetStream and acknowledged once JetStream has stored it on a quorum of the
  stream's replicas; the acknowledgement carries its log position. Every index replica applies the log in
  order, so a replica that was down catches up, and writes go on while replicas restart.
- `DirectWriter` (no log, one replica per shard: the embedded default): the gateway writes each replica
  itself and acknowledges an item OK once every replica committed it.

See docs/architecture.md, "The write log".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import nats.js.errors
from nats.js import JetStreamContext

from crossmodal.transport import code_of
from crossmodal.v1 import index_pb2, types_pb2
from services.common import writelog
from services.common.placement import Placement
from services.gateway.backends import ShardClient
from services.gateway.errors import INVALID, GatewayError, describe_error, status_of

OK = grpc.StatusCode.OK.value[0]


@dataclass
class WriteOutcome:
    """What happened to one write: stored (error None, with its log position when there is a log) or not."""

    error: GatewayError | None = None
    failed_replicas: list[str] = field(default_factory=list)
    position: types_pb2.LogPosition | None = None

    def fail(self, replica: str, code: grpc.StatusCode, message: str) -> None:
        """Record a replica's failure; the item's status is the first failure, or INVALID_ARGUMENT if any."""
        self.failed_replicas.append(replica)
        if self.error is None or code == INVALID:
            self.error = GatewayError(code, f"replica {replica}: {message}")


@dataclass
class DeleteOutcome:
    """How many of the ids existed, and where the deletes are in the log (empty without one)."""

    deleted: int
    positions: list[types_pb2.LogPosition]


class Writer(Protocol):
    """Stores items and deletes ids; one implementation per mode."""

    async def upsert(self, shard: int, items: list[index_pb2.IndexItem]) -> list[WriteOutcome]:
        """Store `items` (all of `shard`); one outcome per item, in order."""
        ...

    async def delete(self, ids: Sequence[str]) -> DeleteOutcome:
        """Delete `ids` wherever they are stored."""
        ...

    async def latest(self, ids: Sequence[str]) -> dict[str, index_pb2.IndexItem]:
        """The stored items among `ids` as the write path last wrote them (no vectors), by id."""
        ...


async def delete_in_batches(writer: Writer, ids: Sequence[str], batch: int) -> DeleteOutcome:
    """Delete any number of ids, `batch` at a time (a video's frames can outnumber CROSSMODAL_MAX_BATCH)."""
    deleted, positions = 0, []
    for start in range(0, len(ids), batch):
        outcome = await writer.delete(ids[start : start + batch])
        deleted += outcome.deleted
        positions.extend(outcome.positions)
    return DeleteOutcome(deleted, positions)


class DirectWriter:
    """Writes every replica of a shard at once; an item is stored when all of them committed it."""

    def __init__(self, shards: Sequence[ShardClient], placement: Placement, model_id: str, timeout: float) -> None:
        self.shards = list(shards)
        self.placement = placement
        self.model_id = model_id
        self.timeout = timeout

    async def upsert(self, shard: int, items: list[index_pb2.IndexItem]) -> list[WriteOutcome]:
        """Store `items` (all routed to `shard`) on each of its replicas; one outcome per item."""
        client = self.shards[shard]
        request = index_pb2.UpsertVectorsRequest(shard=shard, model_id=self.model_id, items=items)
        outcomes = [WriteOutcome() for _ in items]
        for replica, reply in await client.write(lambda stub: stub.UpsertVectors(request, timeout=self.timeout)):
            if isinstance(reply, BaseException):
                code, message = status_of(reply)
                for outcome in outcomes:
                    outcome.fail(replica.address, code, message)
                continue
            for outcome, status in zip(outcomes, reply.statuses, strict=True):
                if status.code != OK:
                    outcome.fail(replica.address, code_of(status.code), status.message)
        return outcomes

    async def delete(self, ids: Sequence[str]) -> DeleteOutcome:
        """Delete `ids` from every replica of their shards; UNAVAILABLE unless all of them applied it."""

        async def delete_on(shard: ShardClient, positions: list[int]) -> int:
            request = index_pb2.DeleteVectorsRequest(shard=shard.number, ids=[ids[p] for p in positions])
            replies = await shard.write(lambda stub: stub.DeleteVectors(request, timeout=self.timeout))
            failed = [(r.address, o) for r, o in replies if isinstance(o, BaseException)]
            if failed:
                raise GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    "delete not applied on every replica (retry it; deletes are idempotent): "
                    + "; ".join(f"{a}: {describe_error(e)}" for a, e in failed),
                )
            return max(o.deleted for _, o in replies)  # type: ignore[union-attr]

        groups = self.placement.group(ids)
        counts = await asyncio.gather(*(delete_on(self.shards[s], p) for s, p in groups.items()))
        return DeleteOutcome(sum(counts), [])

    async def latest(self, ids: Sequence[str]) -> dict[str, index_pb2.IndexItem]:
        """The stored items among `ids`, read from one replica of each shard (all of them committed every write)."""

        async def read(shard: ShardClient, positions: list[int]) -> list[index_pb2.IndexItem]:
            request = index_pb2.GetVectorsRequest(shard=shard.number, ids=[ids[p] for p in positions])
            reply = await shard.read(lambda stub, t: stub.GetVectors(request, timeout=t), self.timeout, 0)
            return list(reply.items)

        groups = self.placement.group(ids)
        replies = await asyncio.gather(*(read(self.shards[s], p) for s, p in groups.items()))
        return {item.id: item for items in replies for item in items}


class LogWriter:
    """Publishes writes to the replicated log; an item is stored once JetStream acknowledged it."""

    def __init__(self, js: JetStreamContext, layout: writelog.LogLayout, model_id: str, timeout: float) -> None:
        self.js = js
        self.layout = layout
        self.model_id = model_id
        self.timeout = timeout

    async def _publish(self, item_id: str, payload: bytes) -> types_pb2.LogPosition:
        partition = self.layout.placement.partition_of(item_id)
        try:
            # No `stream=` expectation: it travels as a header (see services.common.writelog on headers).
            ack = await self.js.publish(self.layout.subject(item_id), payload, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure of the log is reported as retryable
            raise GatewayError(*writelog.log_status(exc, f"item {item_id[:40]!r}")) from None
        return types_pb2.LogPosition(partition=partition, sequence=ack.seq)

    async def upsert(self, shard: int, items: list[index_pb2.IndexItem]) -> list[WriteOutcome]:
        """Publish every item at once; each is OK with its log position, or the log's retryable error."""

        async def one(item: index_pb2.IndexItem) -> WriteOutcome:
            try:
                return WriteOutcome(position=await self._publish(item.id, writelog.encode_upsert(item, self.model_id)))
            except GatewayError as exc:
                return WriteOutcome(error=exc)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def delete(self, ids: Sequence[str]) -> DeleteOutcome:
        """Publish a tombstone for every id; counts those whose latest write was an upsert."""
        unique = list(dict.fromkeys(ids))
        existed = await asyncio.gather(*(self._exists(i) for i in unique))
        positions = await asyncio.gather(*(self._publish(i, writelog.encode_delete(i)) for i in unique))
        return DeleteOutcome(sum(existed), list(positions))

    async def _exists(self, item_id: str) -> bool:
        """Whether the log's latest write of `item_id` stores it (not a tombstone, not never written)."""
        return await self._last(item_id, "delete") is not None

    async def _last(self, item_id: str, what: str) -> index_pb2.IndexItem | None:
        """The item as the log's latest write of `item_id` stores it; None for a tombstone or no write."""
        try:
            partition = self.layout.placement.partition_of(item_id)
            last = await self.js.get_last_msg(self.layout.stream_of(partition), self.layout.subject(item_id))
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - reported as the log's retryable error
            raise GatewayError(*writelog.log_status(exc, f"{what} of {item_id[:40]!r}")) from None
        write = writelog.decode(last.subject or "", last.seq or 0, last.data or b"")
        return write.item if write.op == writelog.UPSERT else None

    async def latest(self, ids: Sequence[str]) -> dict[str, index_pb2.IndexItem]:
        """The items among `ids` whose latest write in the log stores them: the log is the truth, not a replica."""
        found = await asyncio.gather(*(self._last(i, "read") for i in dict.fromkeys(ids)))
        return {item.id: item for item in found if item is not None}
