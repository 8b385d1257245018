"""Where the gateway sends reads (`Router`), and the exact merge of per-shard top-K lists.

Direct mode (no write log): an item's shard is its hash modulo the shard count (services.common.placement)
and every search asks every shard. With the write log, an item's partition is fixed and the partition map
(services.common.partitionmap) says which shard owns it: the router holds the map's latest version, a
search asks the shards that own partitions at that version and tells them the version, and an id is read
from its partition's owner. A shard that cannot answer at that version says ABORTED; the caller re-reads
the map (`refresh`) and plans once more.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Sequence

import grpc

from crossmodal.v1 import index_pb2
from services.common.partitionmap import MapWatcher, PartitionMap
from services.common.placement import Placement
from services.gateway.errors import GatewayError
from services.gateway.metrics import MAP_VERSION


@dataclasses.dataclass(frozen=True)
class MapPlacement(Placement):
    """A Placement whose shards are the partition map's current owners (log mode): what every write path
    and acknowledgement of the gateway reports as an item's shard, without knowing about maps (in log mode
    `Placement.shard_of` goes through `shard_of_partition`, so overriding that one is enough)."""

    watcher: MapWatcher | None = dataclasses.field(default=None, compare=False)

    def shard_of_partition(self, partition: int) -> int:
        """The shard that owns a partition now."""
        current = self.watcher.current if self.watcher is not None else None
        return current.owner_of(partition) if current is not None else super().shard_of_partition(partition)


class Router:
    """The gateway's view of where items live: the placement, and in log mode the partition map."""

    def __init__(self, placement: Placement, addresses: int, watcher: MapWatcher | None = None) -> None:
        self.placement = placement
        self.addresses = addresses
        self.watcher = watcher
        if watcher is not None:
            watcher.listeners.append(self._observed)
            MAP_VERSION.set(self.version)

    async def _observed(self, new: PartitionMap) -> None:
        MAP_VERSION.set(new.version)

    @property
    def map(self) -> PartitionMap | None:
        """The latest partition map this gateway knows (None in direct mode)."""
        return self.watcher.current if self.watcher is not None else None

    @property
    def version(self) -> int:
        """The map version reads are planned at (0 in direct mode: shards answer from all they store)."""
        current = self.map
        return current.version if current is not None else 0

    def _checked(self) -> PartitionMap | None:
        current = self.map
        if current is not None and current.highest_shard >= self.addresses:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the partition map ({current.describe()}) names shard {current.highest_shard}, but this gateway has "
                f"addresses for {self.addresses} shards: list every shard in CROSSMODAL_GATEWAY_SHARDS",
            )
        return current

    def search_shards(self) -> list[int]:
        """The shards a search asks: those that own a partition (every shard in direct mode)."""
        current = self._checked()
        return list(current.shards) if current is not None else list(range(self.placement.shards))

    def group(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Map shard -> positions in `ids` of the ids it answers for."""
        self._checked()
        return self.placement.group(ids)

    def owns(self, shard: int, partition: int) -> bool:
        """Whether `shard` answers for a log partition now."""
        self._checked()
        return self.placement.shard_of_partition(partition) == shard

    async def refresh(self) -> None:
        """Read the map again now (a shard said the version a call was planned at is no longer answerable)."""
        if self.watcher is not None:
            await self.watcher.refresh()


def merge_top_k(
    per_shard: Iterable[Sequence[index_pb2.SearchHit]], k: int, exclude: str | None = None
) -> list[index_pb2.SearchHit]:
    """The K best hits of the union of the shards' answers: by descending score, ties by id.

    An id seen twice (a shard map change left a stale copy) is kept once, with its best score.
    """
    best: dict[str, index_pb2.SearchHit] = {}
    for hits in per_shard:
        for hit in hits:
            if hit.id == exclude:
                continue
            seen = best.get(hit.id)
            if seen is None or hit.score > seen.score:
                best[hit.id] = hit
    return heapq.nsmallest(k, best.values(), key=lambda h: (-h.score, h.id))
