"""Where an item lives: its hash, its partition of the write log, and its shard.

The hash is blake2b of the id's UTF-8 bytes (not Python's salted `hash()`), so every gateway, replica
and restart agree. Without a write log (direct mode) an item's shard is the hash modulo the shard count,
as it always was. With the log, the hash picks one of P fixed partitions, and which shard owns a partition
is the partition map's to say (`services/common/partitionmap.py`; resharding changes it). Its first version
gives partition p to shard `p % shards`, the rule of `Placement` here: for a shard count that divides P (P
is a power of two) both rules give the same shard, so direct-mode data of such a cluster keeps its place.

A video frame (id `<video id>#frame=<n>`, see `frame_id`) is placed by its video's id, so a video and all
its frames live in one partition and one shard: replacing or deleting a video stays local, and stays
correct when partitions move between shards. The gateway refuses `#frame=` in the ids of other items, so
no ordinary id is placed by another's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

FRAME_MARKER = "#frame="
# A window of a long sound or of a video's audio track: `<sound or video id>#window=<n>`, placed like a frame.
WINDOW_MARKER = "#window="
PART_MARKERS = (FRAME_MARKER, WINDOW_MARKER)


def frame_id(video_id: str, number: int) -> str:
    """The id of the `number`-th stored frame of a video."""
    return f"{video_id}{FRAME_MARKER}{number}"


def video_of(item_id: str) -> str | None:
    """The video id of a frame id, or None for any other id."""
    video, marker, number = item_id.rpartition(FRAME_MARKER)
    return video if marker and video and number.isdigit() else None


def window_id(parent_id: str, number: int) -> str:
    """The id of the `number`-th stored audio window of a sound or of a video's audio track."""
    return f"{parent_id}{WINDOW_MARKER}{number}"


def parent_of(item_id: str) -> str | None:
    """The sound or video a frame or window id belongs to, or None for any other id."""
    for marker in PART_MARKERS:
        parent, found, number = item_id.rpartition(marker)
        if found and parent and number.isdigit():
            return parent
    return None


def routing_key(item_id: str) -> str:
    """What places an item: its own id, or its parent's id for a video frame or an audio window."""
    return parent_of(item_id) or item_id


def item_hash(item_id: str) -> int:
    """A stable 64-bit hash of an id (of its routing key: a frame hashes as its video)."""
    return int.from_bytes(hashlib.blake2b(routing_key(item_id).encode("utf-8"), digest_size=8).digest(), "big")


@dataclasses.dataclass(frozen=True)
class Placement:
    """The shard count, and the partition count when writes go through the log (None in direct mode)."""

    shards: int
    partitions: int | None = None

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("a cluster has at least one shard")
        if self.partitions is not None and (self.partitions < self.shards or self.partitions & (self.partitions - 1)):
            raise ValueError(f"{self.partitions} partitions: a power of two, at least the {self.shards} shards")

    def partition_of(self, item_id: str) -> int:
        """The log partition of an id (direct mode: 0, there is no log)."""
        return item_hash(item_id) % self.partitions if self.partitions else 0

    def shard_of(self, item_id: str) -> int:
        """The shard that stores an id."""
        if self.partitions:
            return self.shard_of_partition(self.partition_of(item_id))
        return item_hash(item_id) % self.shards

    def shard_of_partition(self, partition: int) -> int:
        """The shard that owns a log partition."""
        return partition % self.shards

    def partitions_of(self, shard: int) -> list[int]:
        """The log partitions a shard owns."""
        return list(range(shard, self.partitions or 0, self.shards))

    def group(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Map shard -> positions in `ids` of the ids stored there."""
        groups: dict[int, list[int]] = {}
        for position, item_id in enumerate(ids):
            groups.setdefault(self.shard_of(item_id), []).append(position)
        return groups
