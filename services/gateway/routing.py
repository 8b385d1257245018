"""Stable routing of item ids to shards, and the exact merge of per-shard top-K lists."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence

from crossmodal.v1 import index_pb2


def shard_of(item_id: str, shard_count: int) -> int:
    """The shard that stores `item_id`: blake2b of its UTF-8 bytes, modulo the shard count.

    The hash is fixed (not Python's salted hash()) so every gateway replica and every restart agree.
    """
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


def group_by_shard(ids: Sequence[str], shard_count: int) -> dict[int, list[int]]:
    """Map shard -> positions in `ids` of the ids that route there."""
    groups: dict[int, list[int]] = {}
    for position, item_id in enumerate(ids):
        groups.setdefault(shard_of(item_id, shard_count), []).append(position)
    return groups


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
