"""Domain types of the index (items, filters, hits, stats) and the checks every input goes through."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np

from crossmodal.v1 import types_pb2
from services.index.errors import InvalidArgumentError

MODALITY_IMAGE = int(types_pb2.MODALITY_IMAGE)
MODALITY_TEXT = int(types_pb2.MODALITY_TEXT)
MODALITIES = (MODALITY_IMAGE, MODALITY_TEXT)

MAX_ID_BYTES = 256
MAX_TAGS = 64
MAX_FILTER_CLAUSES = 16
MAX_FILTER_KEY_BYTES = 128
MAX_FILTER_VALUES = 64
MAX_FILTER_VALUE_BYTES = 1024
MAX_FILTER_TAGS_ALL = 16
MAX_FILTER_TAGS_ANY = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One item to insert or replace: the vector is the caller's, unnormalised float32."""

    id: str
    modality: int
    vector: np.ndarray
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """What a shard keeps in memory per live USearch key, to filter and answer without the store."""

    id: str
    modality: int
    metadata: Mapping[str, str]
    tags: tuple[str, ...]
    version: int


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
    """A predicate over entries: modality, metadata clauses (AND of memberships) and tags."""

    modality: int = 0
    clauses: tuple[tuple[str, frozenset[str]], ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_any: frozenset[str] = frozenset()

    @property
    def is_empty(self) -> bool:
        """Whether every entry matches."""
        return not (self.modality or self.clauses or self.tags_all or self.tags_any)

    def matches(self, entry: Entry) -> bool:
        """Whether `entry` satisfies every part of the filter."""
        if self.modality and entry.modality != self.modality:
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


def utf8_len(text: str) -> int:
    """Length of `text` in UTF-8 bytes."""
    return len(text.encode("utf-8"))


def check_id(item_id: str) -> None:
    """Refuse ids that are empty or longer than MAX_ID_BYTES."""
    if not item_id:
        raise InvalidArgumentError("id is empty")
    if utf8_len(item_id) > MAX_ID_BYTES:
        raise InvalidArgumentError(f"id is longer than {MAX_ID_BYTES} bytes")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32 (cosine is unchanged; i8 quantisation needs values in [-1, 1])."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def check_vector(vector: np.ndarray, dim: int, what: str = "vector") -> None:
    """Refuse vectors of the wrong dimension, with NaN or Inf, or with zero length."""
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise InvalidArgumentError(f"{what} is empty")
    if dim and vector.shape[0] != dim:
        raise InvalidArgumentError(f"{what} has {vector.shape[0]} dimensions, the shard holds {dim}")
    if not np.isfinite(vector).all():
        raise InvalidArgumentError(f"{what} contains NaN or Inf")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if norm == 0.0 or not math.isfinite(norm):
        raise InvalidArgumentError(f"{what} has zero length")
    # The shard normalises in float32: values whose squares overflow (|x| > ~1.8e19) or underflow
    # (|x| < ~1e-23) would become a zero, infinite or NaN vector there, and the graph would hold garbage.
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        unit_norm = float(np.linalg.norm(normalise(vector).astype(np.float64)))
    if not abs(unit_norm - 1.0) < 1e-3:
        raise InvalidArgumentError(
            f"{what} cannot be scaled to unit length in float32 (length {norm:.3g}); send it normalised"
        )


def check_metadata(metadata: Mapping[str, str], tags: Iterable[str], max_bytes: int) -> None:
    """Refuse empty keys or tags, more than MAX_TAGS tags, or more than `max_bytes` bytes in all."""
    total = 0
    for key, value in metadata.items():
        if not key:
            raise InvalidArgumentError("metadata has an empty key")
        total += utf8_len(key) + utf8_len(value)
    count = 0
    for tag in tags:
        if not tag:
            raise InvalidArgumentError("tags contain an empty tag")
        total += utf8_len(tag)
        count += 1
    if count > MAX_TAGS:
        raise InvalidArgumentError(f"more than {MAX_TAGS} tags ({count})")
    if total > max_bytes:
        raise InvalidArgumentError(f"metadata and tags take {total} bytes, more than the limit of {max_bytes}")


def check_modality(modality: int, allow_unspecified: bool) -> None:
    """Refuse unknown modality numbers (and MODALITY_UNSPECIFIED where an item needs one)."""
    if modality == 0 and allow_unspecified:
        return
    if modality not in MODALITIES:
        raise InvalidArgumentError(f"modality {modality} is not MODALITY_IMAGE or MODALITY_TEXT")


def make_filter(
    modality: int,
    clauses: Iterable[tuple[str, Iterable[str]]],
    tags_all: Iterable[str],
    tags_any: Iterable[str],
) -> Filter:
    """Build a Filter, refusing oversized or empty parts."""
    check_modality(modality, allow_unspecified=True)
    built: list[tuple[str, frozenset[str]]] = []
    for key, values in clauses:
        if not key or utf8_len(key) > MAX_FILTER_KEY_BYTES:
            raise InvalidArgumentError(f"filter key must be 1-{MAX_FILTER_KEY_BYTES} bytes")
        accepted = list(values)
        if not 1 <= len(accepted) <= MAX_FILTER_VALUES:
            raise InvalidArgumentError(f"filter clause on {key!r} needs 1-{MAX_FILTER_VALUES} values")
        if any(utf8_len(v) > MAX_FILTER_VALUE_BYTES for v in accepted):
            raise InvalidArgumentError(f"a filter value is longer than {MAX_FILTER_VALUE_BYTES} bytes")
        built.append((key, frozenset(accepted)))
    if len(built) > MAX_FILTER_CLAUSES:
        raise InvalidArgumentError(f"more than {MAX_FILTER_CLAUSES} filter clauses")
    all_tags = tuple(dict.fromkeys(tags_all))
    any_tags = frozenset(tags_any)
    if len(all_tags) > MAX_FILTER_TAGS_ALL:
        raise InvalidArgumentError(f"more than {MAX_FILTER_TAGS_ALL} tags in tags_all")
    if len(any_tags) > MAX_FILTER_TAGS_ANY:
        raise InvalidArgumentError(f"more than {MAX_FILTER_TAGS_ANY} tags in tags_any")
    if any(not t for t in all_tags) or any(not t for t in any_tags):
        raise InvalidArgumentError("filter tags must not be empty")
    return Filter(modality=modality, clauses=tuple(built), tags_all=all_tags, tags_any=any_tags)
