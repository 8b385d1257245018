"""The write path: stores encoded items and deletes ids on every replica of their shards.

Direct mode: the gateway itself writes each replica and an item is acknowledged OK only when every
replica committed it. A replica that was down misses the write and is not told later (see
docs/architecture.md, "Replicas today, and where they are going").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from crossmodal.transport import code_of
from crossmodal.v1 import index_pb2
from services.gateway.backends import ShardClient
from services.gateway.errors import INVALID, GatewayError, describe_error, status_of
from services.gateway.routing import group_by_shard

OK = grpc.StatusCode.OK.value[0]


@dataclass
class WriteOutcome:
    """What happened to one item: None when every replica committed it, and the replicas that did not."""

    error: GatewayError | None = None
    failed_replicas: list[str] = field(default_factory=list)

    def fail(self, replica: str, code: grpc.StatusCode, message: str) -> None:
        """Record a replica's failure; the item's status is the first failure, or INVALID_ARGUMENT if any."""
        self.failed_replicas.append(replica)
        if self.error is None or code == INVALID:
            self.error = GatewayError(code, f"replica {replica}: {message}")


class DirectWriter:
    """Writes every replica of a shard at once; an item is stored when all of them committed it."""

    def __init__(self, shards: Sequence[ShardClient], model_id: str, timeout: float) -> None:
        self.shards = list(shards)
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

    async def delete(self, ids: Sequence[str]) -> int:
        """Delete `ids` from every replica of their shards; how many existed. UNAVAILABLE unless all applied it."""
        groups = group_by_shard(ids, len(self.shards))

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

        counts = await asyncio.gather(*(delete_on(self.shards[s], p) for s, p in groups.items()))
        return sum(counts)
