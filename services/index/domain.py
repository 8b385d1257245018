"""Domain types of the index: items, filters, hits and stats (the input checks live in services.common.limits)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from crossmodal.v1 import index_pb2, types_pb2
from services.common import limits

MODALITY_IMAGE = int(types_pb2.MODALITY_IMAGE)
MODALITY_TEXT = int(types_pb2.MODALITY_TEXT)


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One item to insert or replace: the vector is the caller's, unnormalised float32."""

    id: str
    modality: int
    vector: np.ndarray
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()


def item_from_proto(item: index_pb2.IndexItem) -> Item:
    """The domain item of an IndexItem (a request's or a log message's), not yet checked against the limits."""
    return Item(
        item.id,
        item.modality,
        np.asarray(item.vector, dtype=np.float32),
        dict(item.metadata),
        tuple(item.tags),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class LogOp:
    """One write read from the write log: an upsert (`item` set) or a delete (`item` None) of `item_id`."""

    sequence: int
    item_id: str
    model_id: str = ""
    item: Item | None = None

    @property
    def op(self) -> str:
        """ "upsert" or "delete" (the label of the metrics)."""
        return "upsert" if self.item is not None else "delete"


@dataclasses.dataclass(frozen=True, slots=True)
class LogApplyResult:
    """What one batch of log writes did: writes applied and skipped (by op and by reason), version, position."""

    applied: Mapping[str, int]
    skipped: Mapping[str, int]
    version: int
    position: int


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """What a shard keeps in memory per live USearch key, to filter and answer without the store."""

    id: str
    modality: int
    metadata: Mapping[str, str]
    tags: tuple[str, ...]
    version: int
    # The write-log partition of the id (its routing key's), set by the catalog in log mode; -1 otherwise.
    partition: int = -1


@dataclasses.dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as the store holds it, with the store version that wrote it."""

    id: str
    modality: int
    metadata: Mapping[str, str]
    tags: tuple[str, ...]
    version: int
    vector: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """A predicate over entries: modalities (any of), metadata clauses (AND of memberships) and tags."""

    modalities: frozenset[int] = frozenset()
    clauses: tuple[tuple[str, frozenset[str]], ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_any: frozenset[str] = frozenset()
    # The write-log partitions the shard answers for at the search's map version (None: every partition).
    partitions: frozenset[int] | None = None

    @property
    def is_empty(self) -> bool:
        """Whether every entry matches."""
        return not (self.modalities or self.clauses or self.tags_all or self.tags_any) and self.partitions is None

    def matches(self, entry: Entry) -> bool:
        """Whether `entry` satisfies every part of the filter."""
        if self.partitions is not None and entry.partition not in self.partitions:
            return False
        if self.modalities and entry.modality not in self.modalities:
            return False
        metadata = entry.metadata
        for key, accepted in self.clauses:
            value = metadata.get(key)
            if value is None or value not in accepted:
                return False
        tags = entry.tags
        if self.tags_all and not all(tag in tags for tag in self.tags_all):
            return False
        return not (self.tags_any and self.tags_any.isdisjoint(tags))


@dataclasses.dataclass(frozen=True, slots=True)
class SearchQuery:
    """A top-K request against one shard."""

    vector: np.ndarray
    k: int
    filter: Filter = Filter()
    exact: bool = False
    include_vectors: bool = False
    model_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    id: str
    score: float
    modality: int
    metadata: Mapping[str, str]
    tags: tuple[str, ...]
    vector: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SearchResult:
    """The best hits of one shard, best first, and how many candidates were examined."""

    hits: list[Hit]
    examined: int


@dataclasses.dataclass(frozen=True, slots=True)
class UpsertResult:
    """Per-item outcome (None: committed, else the reason it was refused) and the store version after."""

    errors: list[str | None]
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class ShardStats:
    """Counts, memory and snapshot state of one shard."""

    shard: int
    count: int
    deleted: int
    memory_bytes: int
    snapshot_age_seconds: float
    snapshot_version: int
    version: int
    model_id: str
    dim: int
    dtype: str
    # With a write log: (partition, last applied sequence) of each partition the shard owns, the writes of
    # those partitions not applied yet, and the age of the oldest of them.
    applied: tuple[tuple[int, int], ...] = ()
    log_lag: int = 0
    log_lag_seconds: float = 0.0
    # With a write log: the latest partition map version the replica knows.
    map_version: int = 0
    # With a write log: live items per partition stored (owned, incoming or outgoing ones alike).
    partition_items: tuple[tuple[int, int], ...] = ()


def make_filter(
    modality: int,
    clauses: Sequence[tuple[str, Sequence[str]]],
    tags_all: Sequence[str],
    tags_any: Sequence[str],
    modalities: Sequence[int] = (),
) -> Filter:
    """Build a Filter once the contract's checks (modality, sizes, empty parts) have passed.

    `modality` and `modalities` together are the accepted modalities (0 and an empty list: any).
    """
    limits.check_modality(modality, allow_unspecified=True)
    for one in modalities:
        limits.check_modality(one, allow_unspecified=False)
    limits.check_filter(clauses, tags_all, tags_any)
    return Filter(
        modalities=frozenset(m for m in (modality, *modalities) if m),
        clauses=tuple((key, frozenset(values)) for key, values in clauses),
        tags_all=tuple(dict.fromkeys(tags_all)),
        tags_any=frozenset(tags_any),
    )
