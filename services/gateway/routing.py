"""The exact merge of per-shard top-K lists (where an item lives is services.common.placement)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from crossmodal.v1 import index_pb2


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
