"""The partition map: which shard owns which partition of the write log, versioned, in a JetStream KV bucket.

With a write log, an item's partition is fixed (blake2b of its routing key modulo P) but the shard that
owns a partition is not: this map says it. It lives in a key-value bucket `<stream>_MAP` (one key,
`map`) that every gateway and index replica reads and watches, so all of them agree on one versioned
answer. Every change is a compare-and-set on the key's revision (`update(..., last=revision)`): two
writers cannot interleave, and a reshard killed at any point resumes from what is stored.

One JSON document says everything, including which phase of a move it is in (docs/architecture.md,
"Resharding"):

- stable: `owner` (the shard of each partition); nothing else.
- copying: `incoming` ({partition: new shard}) and `target` (the shard count being moved to). New owners
  replay those partitions from the log into their stores but do not answer for them yet.
- draining: `owner` already names the new owners (the flip); `outgoing` ({partition: old shard}) lists the
  old ones, which keep the data (and keep applying writes) until the next version, so that searches
  planned at an older version can still be answered.
- the next stable version drops `outgoing`: old owners delete those partitions' items.

Each phase is one version. Searches carry the version they were planned at, and a shard answers only for
the partitions it owns at that version, so each partition is answered exactly once per search.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

log = structlog.get_logger("partitionmap")

MAP_KEY = "map"
STABLE, COPYING, DRAINING = "stable", "copying", "draining"
# Versions a bucket keeps (the most JetStream allows): a process that restarted can still learn an older
# version a search was planned at.
_HISTORY = 64
# How often a watcher re-reads the key even without an update (a lost watch must not go unnoticed).
_POLL_SECONDS = 2.0


class MapError(ValueError):
    """A map document that is not a valid partition map, or a change it cannot take."""


class MapConflictError(RuntimeError):
    """The map changed since it was read (another writer was first); read it again."""


@dataclasses.dataclass(frozen=True)
class PartitionMap:
    """One version of the map; see the module docstring for the phases."""

    version: int
    owner: tuple[int, ...]
    target: int | None = None
    incoming: Mapping[int, int] = dataclasses.field(default_factory=dict)
    outgoing: Mapping[int, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.owner)
        if self.version < 1:
            raise MapError(f"map version {self.version}: versions start at 1")
        if count < 1 or count & (count - 1):
            raise MapError(f"{count} partitions: a power of two is required")
        if any(s < 0 for s in self.owner):
            raise MapError("a shard number is negative")
        if self.incoming and self.outgoing:
            raise MapError("a map lists both incoming and outgoing partitions: no phase has both")
        if bool(self.incoming or self.outgoing) != (self.target is not None):
            raise MapError("a target shard count goes with a move (incoming or outgoing partitions), and only then")
        for table in (self.incoming, self.outgoing):
            for partition, shard in table.items():
                if not 0 <= partition < count or shard < 0:
                    raise MapError(f"partition {partition} -> shard {shard} is out of range")
        for partition, shard in self.incoming.items():
            if self.owner[partition] == shard:
                raise MapError(f"partition {partition} is incoming to shard {shard}, which already owns it")
        if self.target is not None and not 1 <= self.target <= count:
            raise MapError(f"target of {self.target} shards: 1 to {count}")

    @property
    def partitions(self) -> int:
        """P, the number of partitions."""
        return len(self.owner)

    @property
    def phase(self) -> str:
        """stable, copying or draining."""
        if self.incoming:
            return COPYING
        return DRAINING if self.outgoing else STABLE

    @property
    def shards(self) -> tuple[int, ...]:
        """The shards that own at least one partition, ascending."""
        return tuple(sorted(set(self.owner)))

    @property
    def highest_shard(self) -> int:
        """The highest shard number the map names anywhere (an address must exist for each up to it)."""
        return max([*self.owner, *self.incoming.values(), *self.outgoing.values()])

    def owner_of(self, partition: int) -> int:
        """The shard that answers for `partition` at this version."""
        return self.owner[partition]

    def owned(self, shard: int) -> frozenset[int]:
        """The partitions `shard` answers for at this version."""
        return frozenset(p for p, s in enumerate(self.owner) if s == shard)

    def held(self, shard: int) -> frozenset[int]:
        """The partitions `shard` must store and keep applying: owned, incoming to it, or outgoing from it."""
        extra = {p for p, s in self.incoming.items() if s == shard} | {
            p for p, s in self.outgoing.items() if s == shard
        }
        return self.owned(shard) | extra

    def counts(self) -> dict[int, int]:
        """Partitions per owning shard."""
        out: dict[int, int] = {}
        for shard in self.owner:
            out[shard] = out.get(shard, 0) + 1
        return out

    def describe(self) -> str:
        """One line for logs and messages: version, phase and what moves."""
        text = f"version {self.version} ({self.phase}, {shard_count(len(self.shards))}"
        if self.target is not None:
            moving = len(self.incoming) or len(self.outgoing)
            text += f", moving {moving} partitions to {shard_count(self.target)}"
        return text + ")"

    # --- the document ------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The JSON document stored in the bucket."""
        doc: dict[str, object] = {"version": self.version, "partitions": self.partitions, "owner": list(self.owner)}
        if self.target is not None:
            doc["target"] = self.target
        if self.incoming:
            doc["incoming"] = {str(p): s for p, s in sorted(self.incoming.items())}
        if self.outgoing:
            doc["outgoing"] = {str(p): s for p, s in sorted(self.outgoing.items())}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> PartitionMap:
        """The map of a stored document; MapError when it is not one."""
        try:
            doc = json.loads(data)
            owner = tuple(int(s) for s in doc["owner"])
            if int(doc["partitions"]) != len(owner):
                raise MapError(f"the map says {doc['partitions']} partitions but lists {len(owner)} owners")
            target = doc.get("target")
            return cls(
                version=int(doc["version"]),
                owner=owner,
                target=None if target is None else int(target),
                incoming={int(p): int(s) for p, s in doc.get("incoming", {}).items()},
                outgoing={int(p): int(s) for p, s in doc.get("outgoing", {}).items()},
            )
        except MapError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MapError(f"the partition map document does not parse: {exc!r}") from None


def shard_count(shards: int) -> str:
    """A shard count in words for messages: "1 shard", "4 shards"."""
    return f"{shards} shard" if shards == 1 else f"{shards} shards"


def initial(partitions: int, shards: int) -> PartitionMap:
    """Version 1: partition p belongs to shard p % shards (the rule of logs made before the map existed)."""
    return PartitionMap(version=1, owner=tuple(p % shards for p in range(partitions)))


# --- planning: pure functions, one per phase change ---------------------------------------------------


def plan(current: PartitionMap, shards: int) -> dict[int, int]:
    """The partitions that move for `shards` shards: {partition: new shard}, new owner p % shards.

    p % N keeps every partition whose owner already is p % N in place, and spreads P partitions exactly
    evenly when N divides P (2 -> 4 with P = 64: half of them move, 16 per shard after).
    """
    if not 1 <= shards <= current.partitions:
        raise MapError(f"{shards} shards: 1 to the {current.partitions} partitions of the log")
    return {p: p % shards for p, s in enumerate(current.owner) if s != p % shards}


def start_move(current: PartitionMap, shards: int) -> PartitionMap:
    """The copying version: new owners replay their incoming partitions (a stable map only)."""
    if current.phase != STABLE:
        raise MapError(f"a move is already under way: {current.describe()}")
    moves = plan(current, shards)
    if not moves:
        raise MapError(f"nothing moves: the partitions are already spread over {shards} shards")
    return PartitionMap(current.version + 1, current.owner, target=shards, incoming=moves)


def flip(current: PartitionMap) -> PartitionMap:
    """The draining version: incoming partitions change owner; old owners are listed as outgoing."""
    if current.phase != COPYING:
        raise MapError(f"nothing to flip: {current.describe()}")
    owner = list(current.owner)
    outgoing = {}
    for partition, shard in current.incoming.items():
        outgoing[partition] = owner[partition]
        owner[partition] = shard
    return PartitionMap(current.version + 1, tuple(owner), target=current.target, outgoing=outgoing)


def finish(current: PartitionMap) -> PartitionMap:
    """The stable version after draining: old owners drop the partitions they no longer own."""
    if current.phase != DRAINING:
        raise MapError(f"nothing to finish: {current.describe()}")
    return PartitionMap(current.version + 1, current.owner)


# --- the bucket --------------------------------------------------------------------------------------


def bucket_name(stream: str) -> str:
    """The KV bucket of a log's map."""
    return f"{stream}_MAP"


async def open_bucket(js: JetStreamContext, stream: str, replicas: int = 1, create: bool = False) -> KeyValue:
    """The map's bucket; created (with `replicas` copies) when `create`, else BucketNotFoundError if absent."""
    name = bucket_name(stream)
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            raise
    return await js.create_key_value(
        KeyValueConfig(
            bucket=name,
            history=_HISTORY,
            storage=StorageType.FILE,
            replicas=replicas,
            description="crossmodal partition map (which shard owns which partition of the write log)",
        )
    )


async def read(kv: KeyValue) -> tuple[PartitionMap, int] | None:
    """The stored map and its revision, or None when none was written yet."""
    try:
        entry = await kv.get(MAP_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    return PartitionMap.decode(entry.value or b""), int(entry.revision or 0)


async def write(kv: KeyValue, new: PartitionMap, revision: int) -> int:
    """Store `new` if the key is still at `revision` (0: not written yet); the new revision.

    Raises MapConflictError when another writer changed it first.
    """
    try:
        if revision == 0:
            return int(await kv.create(MAP_KEY, new.encode()))
        return int(await kv.update(MAP_KEY, new.encode(), last=revision))
    except nats.js.errors.KeyWrongLastSequenceError:
        raise MapConflictError(f"the partition map changed since revision {revision}") from None


async def ensure(kv: KeyValue, partitions: int, shards: int) -> tuple[PartitionMap, int]:
    """The stored map, or version 1 for `shards` shards written now when there is none."""
    while True:
        found = await read(kv)
        if found is not None:
            current, revision = found
            if current.partitions != partitions:
                raise MapError(
                    f"the partition map has {current.partitions} partitions but the log has {partitions}: "
                    "they are fixed once the log exists"
                )
            return found
        first = initial(partitions, shards)
        try:
            return first, await write(kv, first, 0)
        except MapConflictError:
            continue  # another gateway wrote it first: read theirs


async def history(kv: KeyValue) -> list[PartitionMap]:
    """Every version the bucket still keeps, oldest first."""
    try:
        entries = await kv.history(MAP_KEY)
    except nats.js.errors.NoKeysError:
        return []
    out = []
    for entry in entries:
        with contextlib.suppress(MapError):
            out.append(PartitionMap.decode(entry.value or b""))
    return out


class MapWatcher:
    """The latest map as one process sees it, kept current by a watch, with the last versions it saw.

    `listeners` are awaited, in order, with each newer version once `current` is that version; they run
    under the watcher's lock, so they see versions one at a time and in order.
    """

    def __init__(self, kv: KeyValue, keep: int = 16) -> None:
        self.kv = kv
        self.keep = keep
        self.current: PartitionMap | None = None
        self.versions: dict[int, PartitionMap] = {}
        self.listeners: list[Callable[[PartitionMap], Awaitable[None]]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> PartitionMap:
        """Read the map (waiting for it to exist) and keep watching it; the map read."""
        while True:
            found = await read(self.kv)
            if found is not None:
                break
            await asyncio.sleep(0.25)
        await self.observe(found[0])
        self._task = asyncio.create_task(self._watch(), name="partition-map-watch")
        assert self.current is not None
        return self.current

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def at(self, version: int) -> PartitionMap | None:
        """The map of `version` if this process saw it."""
        return self.versions.get(version)

    async def observe(self, new: PartitionMap) -> None:
        """Take a map read or written by this process; listeners hear of it if it is newer."""
        async with self._lock:
            self.versions[new.version] = new
            for old in sorted(self.versions)[: -self.keep]:
                self.versions.pop(old, None)
            if self.current is not None and new.version <= self.current.version:
                return
            self.current = new
            for listener in self.listeners:
                try:
                    await listener(new)
                except Exception:  # noqa: BLE001 - one listener's failure must not stop the others
                    log.exception("partition map listener failed", version=new.version)
        async with self._changed:
            self._changed.notify_all()

    async def refresh(self) -> PartitionMap | None:
        """Read the map now (not waiting for the watch); the current map."""
        found = await read(self.kv)
        if found is not None:
            await self.observe(found[0])
        return self.current

    async def find(self, version: int, timeout: float) -> PartitionMap | None:
        """The map of `version`: known, newer (read now, or waited for up to `timeout`), or from history."""
        known = self.at(version)
        if known is not None:
            return known
        current = self.current
        if current is None or version > current.version:
            with contextlib.suppress(Exception):
                await self.refresh()
            if self.at(version) is None:
                with contextlib.suppress(TimeoutError):
                    async with self._changed:
                        await asyncio.wait_for(self._changed.wait_for(lambda: version in self.versions), timeout)
            return self.at(version)
        # Older than the current one and not kept: the bucket's history (after a restart, say).
        with contextlib.suppress(Exception):
            for old in await history(self.kv):
                self.versions.setdefault(old.version, old)
        return self.versions.get(version)

    async def _watch(self) -> None:
        """Follow the key: every update, and a read every few seconds in case the watch was lost."""
        while True:
            watcher = None
            try:
                watcher = await self.kv.watch(MAP_KEY)
                while True:
                    try:
                        entry = await watcher.updates(timeout=_POLL_SECONDS)
                    except nats.errors.TimeoutError:
                        await self.refresh()
                        continue
                    if entry is not None and entry.value:
                        await self.observe(PartitionMap.decode(entry.value))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the log was away or a bad document: watch again
                log.warning("watching the partition map failed; watching again", error=repr(exc))
                await asyncio.sleep(1.0)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(watcher.stop(), 1.0)
