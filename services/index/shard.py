"""One shard: a USearch HNSW graph over a durable SQLite store, with snapshots, replay and compaction.

The store (`store.py`) is the source of truth; the graph is a cache of it that can always be rebuilt.
USearch keys are integers handed out by the store from a counter that never goes back, so a replaced
or re-added id gets a fresh key and a removed key is never reused (usearch #445). The shard also keeps
a catalog (`catalog.py`: live key -> id, modality, metadata, tags, plus posting lists) in memory: it
filters candidates and builds results without touching SQLite, and only keys in it are ever returned.

Locking. USearch objects are not safe under concurrent calls from several Python threads (usearch
#441, #564): the binding gives each call scratch slots numbered by a thread index local to that call,
so two concurrent calls share slots (newer bindings add a mutex of their own; we do not rely on it). So:
- `_index_lock` guards the USearch index object *and* the catalog together. Every native USearch call
  (search, add, remove, save, contains) is made while holding it, so there is never more than one at
  a time, and a search sees the graph and the catalog at the same store version. A whole search,
  including every widening round of a filtered one, runs under one acquisition: its answer is the
  exact state after some committed write, never a mix of two.
- `_write_lock` serialises writers. A write commits to the store first (fsync) and then applies the
  same change to the graph and catalog under `_index_lock`, so the graph always reflects a prefix of
  the store's versions (`_applied_version`) and a write is acknowledged only after both. Searches wait
  for the short graph update only, never for an fsync.
- `_maintenance_lock` serialises snapshots and compactions (one at a time per shard).
Lock order is maintenance -> write -> index; no code path takes them in another order.

The write log (log mode, `follower.py`). A replica that follows the log gets its writes from
`apply_log` only, one batch of one partition at a time, under `_write_lock` like any writer: the batch's
items, deletes and the partition's new position commit in ONE store transaction, then graph and catalog
are updated under `_index_lock` exactly as for an upsert or delete, and only then does the in-memory
position (`_log_positions`, what `log_position` and the read-your-writes wait see) move. So a position a
reader sees is always covered by the graph, and a kill -9 at any point leaves the store at a position it
holds every write up to, and none past it: the follower resumes after the recorded position. The store
refuses a batch unless its recorded position is still the one the batch was read after, so no write is
ever applied twice. Writes the shard refuses (another model, a broken limit) are skipped and counted, and
their position still advances: a poison message must not stall its partition.

Resharding (log mode, docs/architecture.md "Resharding"). Once the follower tells the shard the log's
partition count (`use_partitions`), the catalog knows every entry's partition, and a search may be
limited to the partitions the shard owns at the search's map version (`Filter.partitions`; simplified
away when the shard stores nothing else, the steady state). `drop_partition` removes a partition a
reshard moved away: under `_write_lock` like any writer, its items and its recorded position go in one
store transaction, then graph and catalog, so a kill -9 leaves either both or neither (and the follower
drops a leftover again at its next start).

Durability (design.md, "Durability contract"):
- Snapshot: under `_index_lock` the graph is serialised to memory (a memcpy-speed pause) together with
  the version it covers; the bytes are then written to `index-<version>-<ns>.usearch.tmp`, fsynced, renamed
  into place and the directory fsynced, all without any lock; finally the store records file name,
  version, size and CRC-32, and drops `removed` rows the snapshot covers. Older snapshot files are
  deleted only after that commit, so a crash at any point leaves the recorded snapshot intact. A graph
  whose update failed after its commit is never saved: an explicit snapshot (CreateSnapshot) rebuilds it
  from the store first, and one that still cannot be written is an error, never a reply naming a
  snapshot that does not exist.
- Start: load the recorded snapshot if its size and CRC-32 match (USearch itself happily loads a
  file with flipped bytes), then replay store rows newer than its version and the `removed` keys newer
  than it, and check the result against the catalog (same count, every live key present). A missing,
  damaged, mismatched (dtype, connectivity or dimension changed) or inconsistent snapshot means a
  rebuild from the store, never a loss.
- Compaction: USearch `remove()` only marks entries, so after many deletes the graph is rebuilt from a
  consistent read of the store without any lock held (searches and writes go on against the old
  graph); then, under `_write_lock` so no commit slips in between, the writes committed meanwhile are
  replayed into the new graph and the graph is swapped in under `_index_lock`. We never call
  `view()` (removing from a viewed index corrupts it, usearch #506): snapshots are always loaded.
- Disk full (SQLITE_FULL, ENOSPC, EDQUOT): the write's transaction is rolled back before the graph or
  catalog is touched, so nothing of it is visible or acknowledged; a snapshot that runs out of space
  deletes its partial file and leaves the recorded one current. The caller gets StorageFullError
  (RESOURCE_EXHAUSTED, retryable), reads go on, and writes work again once space is freed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import math
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import numpy as np
import structlog
from usearch.index import Index, MetricKind

from services.common.limits import LimitError, check_id, check_modality, check_vector, unit_rows
from services.index import metrics
from services.index.catalog import Catalog
from services.index.config import ShardSettings
from services.index.domain import (
    Entry,
    Hit,
    Item,
    LogApplyResult,
    LogOp,
    SearchQuery,
    SearchResult,
    ShardStats,
    StoredItem,
    UpsertResult,
)
from services.index.errors import (
    InvalidArgumentError,
    PreconditionError,
    ShardUnavailableError,
    StorageFullError,
)
from services.index.store import SnapshotRecord, Store

log = structlog.get_logger("index.shard")

# A search candidate: USearch key, distance (1 - cosine), catalog entry.
Found = tuple[int, float, Entry]

_SNAPSHOT_PREFIX = "index-"
_SNAPSHOT_SUFFIX = ".usearch"
# A re-ranked precision (config.PRECISIONS) fetches K times this many candidates from the graph.
_RERANK_FACTOR = 4
# Batches smaller than this are added on the calling thread: spawning USearch workers costs more.
_PARALLEL_ADD_MIN = 256
# Once a filtered search would ask the graph for more than this share of the shard, a brute-force pass
# over everything is cheaper than HNSW and, unlike HNSW, guaranteed to see every entry.
_EXHAUSTIVE_SHARE = 0.25
# No space left, or the user's quota spent: both clear up once space is freed, so both mean "disk full".
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _cosine(stored: np.ndarray, unit_query: np.ndarray) -> float:
    return float(np.dot(stored, unit_query) / np.linalg.norm(stored))


def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_removed(result: int | bool | np.ndarray) -> int:
    return int(np.sum(result))


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the file system has no space (or quota) left: SQLITE_FULL, ENOSPC or EDQUOT."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            # Extended result codes keep the primary code in the low byte.
            return int(code) & 0xFF == sqlite3.SQLITE_FULL
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def _is_io_error(exc: BaseException) -> bool:
    # SQLite reports some out-of-space cases as I/O errors (growing the WAL index: SQLITE_IOERR_SHMSIZE).
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and int(code) & 0xFF == sqlite3.SQLITE_IOERR


class Shard:
    """One shard of the index; thread-safe (see the module docstring for the locking design)."""

    def __init__(self, number: int, directory: Path, settings: ShardSettings) -> None:
        """Open the shard in `directory` (created if needed): lock it, load or rebuild its graph."""
        self.number = number
        self.directory = directory
        self.settings = settings
        self._label = str(number)
        self._index_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._maintenance_lock = threading.Lock()
        self._index: Index | None = None
        # The write log's partition count once the follower said it (log mode); the catalog then knows the
        # partition of each entry, so searches can be limited to owned partitions and moved ones dropped.
        self._partitions: int | None = None
        self._catalog = Catalog()
        self._applied_version = 0
        self._log_positions: dict[int, int] = {}
        self._deleted = 0
        self._memory_bytes = 0
        self._needs_rebuild = False
        # Set after a rebuild at start: the recorded snapshot is unusable, so the next pass replaces it.
        self._snapshot_stale = False
        self._closed = False
        self._opened_at = time.monotonic()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_directory_lock()
        try:
            self._store = Store(directory / "store.sqlite3")
            if settings.dim and self._store.dim and settings.dim != self._store.dim:
                raise PreconditionError(
                    f"shard {number} holds {self._store.dim}-d vectors but the configured dimension is {settings.dim}"
                )
            self._recover()
        except BaseException:
            self._lock_file.close()
            raise
        metrics.SNAPSHOT_AGE.labels(self._label).set_function(self.snapshot_age)
        self._publish()

    # --- opening -----------------------------------------------------------------------------

    def _acquire_directory_lock(self) -> IO[bytes]:
        # Two processes on one shard directory would each believe their graph is the truth.
        fh = open(self.directory / "LOCK", "ab")  # noqa: SIM115 - held open for the shard's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ShardUnavailableError(f"shard directory {self.directory} is in use by another process") from None
        return fh

    @property
    def dim(self) -> int:
        """The vector dimension (0 while no vector was written and none is configured)."""
        return self._store.dim or self.settings.dim

    def _new_index(self, dim: int) -> Index:
        return Index(
            ndim=dim,
            metric=self.settings.precision.metric,
            dtype=self.settings.dtype,
            connectivity=self.settings.connectivity,
            expansion_add=self.settings.expansion_add,
            expansion_search=self.settings.expansion_search,
            multi=False,
        )

    def _add(self, index: Index, keys: np.ndarray, vectors: np.ndarray) -> None:
        threads = self.settings.threads if len(keys) >= _PARALLEL_ADD_MIN else 1
        index.add(keys, unit_rows(vectors), threads=threads)

    def _recover(self) -> None:
        started = time.perf_counter()
        self._log_positions = dict(self._store.log_positions)
        for key, entry in self._store.entries():
            self._catalog.add(key, entry)
        self._applied_version = self._store.version
        dim = self.dim
        if not dim:
            return
        index, reason = self._load_snapshot(dim)
        if index is not None:
            index, reason = self._replay(index)
        if index is None:
            if self._catalog or reason not in ("missing",):
                log.warning(
                    "rebuilding shard graph from the store",
                    shard=self.number,
                    reason=reason,
                    items=len(self._catalog),
                )
                metrics.REBUILDS.labels(self._label, reason).inc()
            index = self._build(dim)
            self._deleted = 0
            self._snapshot_stale = bool(self._catalog)
        self._index = index
        self._memory_bytes = int(index.memory_usage)
        self._remove_stale_snapshots()
        log.info(
            "shard open",
            shard=self.number,
            items=len(self._catalog),
            version=self._applied_version,
            deleted=self._deleted,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _load_snapshot(self, dim: int) -> tuple[Index | None, str]:
        record = self._store.snapshot
        if record is None:
            return None, "missing"
        path = self.directory / record.file
        if not path.is_file():
            return None, "missing"
        if path.stat().st_size != record.size or _crc32_file(path) != record.crc32:
            log.warning("snapshot damaged", shard=self.number, file=record.file)
            return None, "damaged"
        index = self._new_index(dim)
        try:
            meta = Index.metadata(os.fspath(path)) or {}
            # Loading takes dtype and metric from the file; a snapshot made under other settings is
            # rebuilt rather than silently keeping them.
            if (
                meta.get("dimensions") != dim
                or meta.get("kind_scalar") != self.settings.precision.scalar
                or meta.get("kind_metric") != self.settings.precision.metric
            ):
                return None, "config_changed"
            index.load(os.fspath(path))
        except (RuntimeError, ValueError) as exc:
            log.warning("snapshot unreadable", shard=self.number, file=record.file, error=str(exc))
            return None, "damaged"
        if index.ndim != dim or index.connectivity != self.settings.connectivity:
            return None, "config_changed"
        # usearch declares these setters apart from their getters, which mypy reads as read-only.
        index.expansion_add = self.settings.expansion_add  # type: ignore[misc]
        index.expansion_search = self.settings.expansion_search  # type: ignore[misc]
        self._deleted = int(meta.get("count_deleted", 0))
        return index, ""

    def _replay(self, index: Index) -> tuple[Index | None, str]:
        record = self._store.snapshot
        assert record is not None
        try:
            for keys, vectors in self._store.vectors(newer_than=record.version):
                self._add(index, keys, vectors)
            removed = self._store.removed_since(record.version)
            if removed:
                self._deleted += _count_removed(index.remove(np.asarray(removed, dtype=np.uint64)))
        except (RuntimeError, ValueError) as exc:
            log.warning("snapshot replay failed", shard=self.number, error=str(exc))
            return None, "inconsistent"
        live = np.fromiter(self._catalog, dtype=np.uint64, count=len(self._catalog))
        if len(index) != len(live) or (len(live) and not bool(np.all(index.contains(live)))):
            log.warning("snapshot disagrees with the store", shard=self.number, graph=len(index), store=len(live))
            return None, "inconsistent"
        return index, ""

    def _build(self, dim: int, conn: sqlite3.Connection | None = None) -> Index:
        index = self._new_index(dim)
        for keys, vectors in self._store.vectors(conn):
            self._add(index, keys, vectors)
        return index

    def _remove_stale_snapshots(self) -> None:
        current = self._store.snapshot.file if self._store.snapshot else None
        for path in self.directory.glob(_SNAPSHOT_PREFIX + "*"):
            if path.name != current:
                path.unlink(missing_ok=True)

    # --- writes ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ShardUnavailableError(f"shard {self.number} is closed")

    def _no_space_left(self) -> bool:
        """Whether the file system of the shard's directory has no block left for this process."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return False
        return st.f_bavail == 0

    @contextlib.contextmanager
    def _disk_full_guard(self, op: str) -> Iterator[None]:
        """Turn a disk-full error raised inside into StorageFullError (counted and logged); others pass."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            if not (is_disk_full(exc) or (_is_io_error(exc) and self._no_space_left())):
                raise
            metrics.WRITE_ERRORS.labels(self._label, op, "disk_full").inc()
            log.warning(
                "write refused: the shard's disk is full; free space in its data directory",
                shard=self.number,
                directory=str(self.directory),
                op=op,
                error=str(exc),
            )
            undone = (
                "no snapshot was written and the previous one stays current"
                if op == "snapshot"
                else f"the {op} was rolled back and nothing of it was stored"
            )
            raise StorageFullError(
                f"shard {self.number}: the disk holding its data directory {self.directory} is full ({exc}); "
                f"{undone}: free space there and retry"
            ) from exc

    def upsert(self, model_id: str, items: Sequence[Item]) -> UpsertResult:
        """Insert or replace `items` by id in one commit; bad items are refused one by one with a reason.

        A later item with the same id as an earlier one in the batch wins. Raises PreconditionError when
        `model_id` is not the shard's. Returns after the commit (fsync) and the graph update.
        """
        self._check_open()
        if not model_id:
            raise InvalidArgumentError("model_id is empty")
        errors: list[str | None] = [None] * len(items)
        started = time.perf_counter()
        with self._write_lock:
            self._check_open()
            if self._store.model_id and model_id != self._store.model_id:
                raise PreconditionError(
                    f"shard {self.number} holds vectors of model {self._store.model_id!r}, not {model_id!r}"
                )
            dim = self.dim
            accepted: dict[str, Item] = {}
            for position, item in enumerate(items):
                try:
                    check_id(item.id)
                    check_modality(item.modality, allow_unspecified=False)
                    check_vector(item.vector, dim)
                    self.settings.limits.check_metadata(item.metadata, item.tags)
                except LimitError as exc:
                    errors[position] = str(exc)
                    continue
                dim = dim or int(item.vector.shape[0])
                accepted.pop(item.id, None)
                accepted[item.id] = item
            if not accepted:
                return UpsertResult(errors, self._store.version)
            rows = list(accepted.values())
            # A failed commit leaves store, graph and catalog as they were: the graph is only touched below.
            with self._disk_full_guard("upsert"):
                version, keys, replaced = self._store.upsert(model_id, dim, rows)
            entries = {
                key: Entry(row.id, row.modality, dict(row.metadata), tuple(row.tags), version)
                for key, row in zip(keys, rows, strict=True)
            }
            vectors = np.stack([row.vector for row in rows])
            self._apply(version, dim, np.asarray(keys, dtype=np.uint64), vectors, entries, replaced)
        metrics.WRITE_SECONDS.labels(self._label, "upsert").observe(time.perf_counter() - started)
        return UpsertResult(errors, version)

    def delete(self, ids: Sequence[str]) -> tuple[int, int]:
        """Delete `ids` (absent ones are ignored); (how many existed, store version after)."""
        self._check_open()
        for item_id in ids:
            check_id(item_id)
        started = time.perf_counter()
        with self._write_lock:
            self._check_open()
            with self._disk_full_guard("delete"):
                version, keys = self._store.delete(ids)
            if keys:
                self._apply(version, self.dim, None, None, {}, keys)
        metrics.WRITE_SECONDS.labels(self._label, "delete").observe(time.perf_counter() - started)
        return len(keys), version

    def _apply(
        self,
        version: int,
        dim: int,
        keys: np.ndarray | None,
        vectors: np.ndarray | None,
        entries: dict[int, Entry],
        removed: Sequence[int],
    ) -> None:
        """Bring graph and catalog to `version` after its commit (caller holds `_write_lock`)."""
        with self._index_lock:
            try:
                if self._index is None:
                    self._index = self._new_index(dim)
                if removed:
                    self._deleted += _count_removed(self._index.remove(np.asarray(removed, dtype=np.uint64)))
                    for key in removed:
                        self._catalog.remove(key)
                if keys is not None and vectors is not None and len(keys):
                    self._add(self._index, keys, vectors)
                    for key, entry in entries.items():
                        self._catalog.add(key, entry)
                self._applied_version = version
                self._memory_bytes = int(self._index.memory_usage)
            except BaseException:
                # The commit stands (it is durable); the graph no longer matches it, so searches must
                # not trust it for long: the next maintenance pass rebuilds it from the store.
                self._needs_rebuild = True
                log.exception("graph update failed after commit; a rebuild is scheduled", shard=self.number)
                raise
        self._publish()

    def log_position(self, partition: int) -> int:
        """The last write-log sequence of `partition` applied to store, graph and catalog (0: none)."""
        return self._log_positions.get(partition, 0)

    def apply_log(self, partition: int, position: int, writes: Sequence[LogOp]) -> LogApplyResult:
        """Apply an ordered batch of one partition's log writes and move its position to `position`.

        `writes` are in log order, all at or before `position` (the batch's last sequence, which also covers
        messages the caller could not decode). A later write of an id wins over an earlier one. Writes the
        position already covers are dropped; refused ones (another model, a broken limit) are skipped with
        a reason; both still count as applied for the position. One commit, then graph and catalog.
        """
        self._check_open()
        started = time.perf_counter()
        applied: dict[str, int] = {}
        skipped: dict[str, int] = {}
        with self._write_lock:
            self._check_open()
            after = self._log_positions.get(partition, 0)
            if position <= after:
                skipped["already_applied"] = len(writes)
                return LogApplyResult(applied, skipped, self._store.version, after)
            model_id, dim = self._store.model_id, self.dim
            latest: dict[str, LogOp] = {}
            refusals: list[str] = []
            for write in writes:
                if write.sequence > position:
                    raise ValueError(f"log write {write.sequence} is past the batch position {position}")
                if write.sequence <= after:
                    skipped["already_applied"] = skipped.get("already_applied", 0) + 1
                    continue
                reason, detail = self._refusal(write, model_id, dim)
                if reason:
                    skipped[reason] = skipped.get(reason, 0) + 1
                    refusals.append(f"{write.sequence}: {detail}")
                    continue
                if write.item is not None:
                    model_id, dim = model_id or write.model_id, dim or int(write.item.vector.shape[0])
                latest.pop(write.item_id, None)
                latest[write.item_id] = write
                applied[write.op] = applied.get(write.op, 0) + 1
            if refusals:
                log.warning(
                    "log writes skipped",
                    shard=self.number,
                    partition=partition,
                    skipped=skipped,
                    first=refusals[0],
                )
            rows = [w.item for w in latest.values() if w.item is not None]
            deletes = [w.item_id for w in latest.values() if w.item is None]
            # A failed commit leaves store, graph, catalog and position as they were.
            with self._disk_full_guard("log"):
                version, keys, removed = self._store.apply_log(partition, after, position, model_id, dim, rows, deletes)
            try:
                if keys or removed:
                    entries = {
                        key: Entry(row.id, row.modality, dict(row.metadata), tuple(row.tags), version)
                        for key, row in zip(keys, rows, strict=True)
                    }
                    vectors = np.stack([row.vector for row in rows]) if rows else None
                    key_array = np.asarray(keys, dtype=np.uint64) if keys else None
                    self._apply(version, dim, key_array, vectors, entries, removed)
            finally:
                # The commit stands even when the graph update failed (a rebuild is scheduled then): the
                # position must follow the store, or the next batch would be refused for ever.
                self._log_positions[partition] = position
        metrics.WRITE_SECONDS.labels(self._label, "log").observe(time.perf_counter() - started)
        return LogApplyResult(applied, skipped, version, position)

    def use_partitions(self, partitions: int) -> None:
        """Learn the write log's partition count: from now on every entry knows its partition (log mode)."""
        with self._write_lock, self._index_lock:
            if self._partitions != partitions:
                self._catalog = self._catalog.with_partitions(partitions)
                self._partitions = partitions

    def held_partitions(self) -> set[int]:
        """The partitions the shard stores anything of: items, or an applied position (log mode)."""
        return set(self._partition_counts()) | set(self._log_positions)

    def drop_partition(self, partition: int) -> int:
        """Delete every item of a partition the shard no longer owns, and its log position; how many items.

        One commit (the store's `drop_partition`), then graph and catalog, as for a delete. The caller has
        stopped applying the partition first, so no write of it lands after this.
        """
        self._check_open()
        if self._partitions is None:
            raise PreconditionError(f"shard {self.number} does not know the write log's partitions")
        with self._write_lock:
            self._check_open()
            with self._index_lock:
                keys = self._catalog.partition_keys(partition)
            with self._disk_full_guard("drop"):
                version, removed = self._store.drop_partition(partition, keys)
            try:
                if removed:
                    self._apply(version, self.dim, None, None, {}, removed)
            finally:
                self._log_positions.pop(partition, None)
        log.info("partition dropped", shard=self.number, partition=partition, items=len(removed))
        return len(removed)

    def _refusal(self, write: LogOp, model_id: str, dim: int) -> tuple[str, str]:
        """Why a log write cannot be applied as ("reason", "detail"), or ("", "") when it can."""
        try:
            check_id(write.item_id)
            item = write.item
            if item is None:
                return "", ""
            if not write.model_id or (model_id and write.model_id != model_id):
                return "model", f"model {write.model_id!r}, the shard holds {model_id!r}"
            check_modality(item.modality, allow_unspecified=False)
            check_vector(item.vector, dim)
            self.settings.limits.check_metadata(item.metadata, item.tags)
        except LimitError as exc:
            return "invalid", str(exc)
        return "", ""

    # --- reads -------------------------------------------------------------------------------

    def get(self, ids: Sequence[str], include_vectors: bool) -> tuple[list[StoredItem], list[str]]:
        """The stored items among `ids` in request order (each once), and the ids that are absent."""
        self._check_open()
        for item_id in ids:
            check_id(item_id)
        found = self._store.get(ids, include_vectors)
        items: list[StoredItem] = []
        missing: list[str] = []
        for item_id in dict.fromkeys(ids):
            item = found.get(item_id)
            if item is None:
                missing.append(item_id)
            else:
                items.append(item)
        return items, missing

    def search(self, query: SearchQuery) -> SearchResult:
        """The top-K live items by cosine similarity that pass the query's filter, best first."""
        result = self._search(query, wait=True)
        assert result is not None
        return result

    def try_search(self, query: SearchQuery) -> SearchResult | None:
        """`search` if it is a plain graph search and no writer holds the index; None at once otherwise.

        The servicer runs such searches on its event loop: a thread hop costs a shard more CPU than
        a small graph search, and the loop must never block behind a write, a filtered or exact
        search, or the store reads of reranking and returned vectors. A filter on modalities alone may
        still be plain: the catalog drops it when every item of the shard passes it (`Catalog.simplify`).
        """
        flt = query.filter
        # Modalities and partitions alone may simplify away (Catalog.simplify); other parts never do.
        only_modalities = not (flt.clauses or flt.tags_all or flt.tags_any)
        if query.exact or query.include_vectors or not only_modalities or self.settings.precision.reranked:
            return None
        return self._search(query, wait=False)

    def _search(self, query: SearchQuery, wait: bool) -> SearchResult | None:
        self._check_open()
        if query.k < 1:
            raise InvalidArgumentError("k must be at least 1")
        if query.model_id and self._store.model_id and query.model_id != self._store.model_id:
            raise PreconditionError(
                f"shard {self.number} holds vectors of model {self._store.model_id!r}, not {query.model_id!r}"
            )
        check_vector(query.vector, self.dim, "query vector")
        vector = unit_rows(query.vector)
        started = time.perf_counter()
        rerank = self.settings.precision.reranked
        inner = dataclasses.replace(query, k=query.k * _RERANK_FACTOR) if rerank else query
        if not self._index_lock.acquire(blocking=wait):
            return None
        try:
            self._check_open()
            inner = dataclasses.replace(inner, filter=self._catalog.simplify(inner.filter))
            if not wait and not inner.filter.is_empty:
                return None  # a filtered search after all: not on the event loop
            found, examined = self._search_locked(vector, inner)
        finally:
            self._index_lock.release()
        vectors: dict[int, np.ndarray] = {}
        if (query.include_vectors or rerank) and found:
            vectors = self._store.vectors_by_key(key for key, _, _ in found)
            # Deleted or replaced between the graph search and the vector read: it is gone now.
            found = [f for f in found if f[0] in vectors]
        if rerank:
            exact = [(key, 1.0 - _cosine(vectors[key], vector), entry) for key, _, entry in found]
            found = sorted(exact, key=lambda f: f[1])[: query.k]
        hits = []
        for key, distance, entry in found:
            score = min(1.0, max(-1.0, 1.0 - float(distance)))
            vector_out = vectors.get(key) if query.include_vectors else None
            hits.append(Hit(entry.id, score, entry.modality, entry.metadata, entry.tags, vector_out))
        metrics.SEARCH_SECONDS.labels(self._label).observe(time.perf_counter() - started)
        metrics.SEARCH_EXAMINED.labels(self._label).observe(examined)
        return SearchResult(hits, examined)

    def _search_locked(self, vector: np.ndarray, query: SearchQuery) -> tuple[list[Found], int]:
        """Pick a strategy for the query's filter and run it; the caller holds `_index_lock`.

        - No filter: one graph search (or one exhaustive one when `exact`).
        - A filter whose narrowest part (by the catalog's posting lists) lists few keys: brute force
          over those keys. Cost ~ m vector reads, against ~ k * n / m graph candidates for the
          over-fetch below. A vector read (~10-20 us, one USearch `get` row) costs about what a graph
          candidate does, so the two break even near m * m = k * n; brute force is exact, though,
          and a deep over-fetch is not (recall@10 0.90 at 1% of 200k), so the default factor of 4
          brute-forces up to m * m <= 4 * k * n: filters matching up to ~2.8k items at n = 200k.
        - Otherwise: over-fetch from the graph by the filter's estimated selectivity, check each
          candidate against the filter, and widen until K pass; past _EXHAUSTIVE_SHARE of the shard,
          one exhaustive pass in distance order (HNSW may not reach every node; brute force does).
        """
        index = self._index
        total = len(self._catalog)
        if index is None or total == 0:
            return [], 0
        k, flt, catalog = query.k, query.filter, self._catalog
        if flt.is_empty:
            matches = index.search(vector, min(k, total), exact=query.exact, threads=1)
            found = []
            for raw_key, dist in zip(matches.keys, matches.distances, strict=True):
                entry = catalog.get(int(raw_key))
                if entry is not None:
                    found.append((int(raw_key), float(dist), entry))
            return found, len(matches.keys)
        narrowest = catalog.narrowest(flt)
        bound = total if narrowest is None else min(total, narrowest[0])
        if narrowest is not None and bound * bound <= self.settings.brute_force_factor * k * total:
            return self._brute_force_locked(index, vector, query, narrowest[1]())
        if query.exact:
            return self._exhaustive_locked(index, vector, query, total, 0)

        expected_rate = bound / total
        count = min(total, max(k * self.settings.filter_overfetch, k + 16, math.ceil(k / expected_rate * 1.5)))
        seen: set[int] = set()
        candidates: list[Found] = []
        while True:
            if count >= total * _EXHAUSTIVE_SHARE:
                return self._exhaustive_locked(index, vector, query, total, len(seen))
            matches = index.search(vector, count, threads=1)
            for raw_key, dist in zip(matches.keys, matches.distances, strict=True):
                key = int(raw_key)
                if key in seen:
                    continue
                seen.add(key)
                entry = catalog.get(key)
                if entry is not None and flt.matches(entry):
                    candidates.append((key, float(dist), entry))
            if len(candidates) >= k:
                break
            # Widen by the selectivity seen so far, with headroom, and at least double each round.
            rate = len(candidates) / max(len(seen), 1)
            needed = math.ceil(k / rate * 1.5) if rate > 0 else count * 8
            count = min(total, max(count * 2, needed))
        candidates.sort(key=lambda c: c[1])
        return candidates[:k], len(seen)

    def _brute_force_locked(
        self, index: Index, vector: np.ndarray, query: SearchQuery, listed: Iterable[int]
    ) -> tuple[list[Found], int]:
        """Exact distances to the listed keys that pass the filter (holds `_index_lock`)."""
        catalog, flt = self._catalog, query.filter
        examined = 0
        keys: list[int] = []
        for key in listed:
            examined += 1
            entry = catalog.get(key)
            if entry is not None and flt.matches(entry):
                keys.append(key)
        if not keys:
            return [], examined
        # Many keys come back as a tuple of rows; every key here is live, so none of them is None.
        rows = index.get(np.asarray(keys, dtype=np.uint64), dtype="f32")
        stored = np.stack(cast(tuple[np.ndarray, ...], rows))
        similarity = stored @ vector
        if self.settings.precision.metric == MetricKind.Cos:
            similarity = similarity / np.linalg.norm(stored, axis=1)
        distances = 1.0 - similarity
        order = np.argsort(distances, kind="stable")[: query.k]
        found = []
        for i in order:
            entry = catalog.get(keys[i])
            assert entry is not None
            found.append((keys[i], float(distances[i]), entry))
        return found, examined

    def _exhaustive_locked(
        self, index: Index, vector: np.ndarray, query: SearchQuery, total: int, examined_before: int
    ) -> tuple[list[Found], int]:
        """Brute force over every entry in distance order until K pass the filter (holds `_index_lock`)."""
        matches = index.search(vector, total, exact=True, threads=1)
        found: list[Found] = []
        examined = 0
        catalog, flt, k = self._catalog, query.filter, query.k
        for raw_key, dist in zip(matches.keys, matches.distances, strict=True):
            examined += 1
            entry = catalog.get(int(raw_key))
            if entry is not None and flt.matches(entry):
                found.append((int(raw_key), float(dist), entry))
                if len(found) == k:
                    break
        return found, examined_before + examined

    # --- snapshots, compaction, stats ---------------------------------------------------------

    def snapshot_age(self) -> float:
        """Seconds since the latest snapshot was written, or -1 when there is none."""
        record = self._store.snapshot
        return -1.0 if record is None else max(0.0, time.time() - record.created_at)

    def snapshot(self) -> tuple[int, float]:
        """Write a snapshot now, after any pending graph rebuild; (store version it covers, seconds).

        Never answers without having written one: PreconditionError when the shard has no graph yet (no
        vector was ever written and no dimension is configured, so the empty store is its whole state),
        ShardUnavailableError when a graph update failed again while the snapshot was taken.
        """
        self._check_open()
        with self._maintenance_lock:
            self._check_open()
            if self._needs_rebuild:
                # The graph is not trusted until it is rebuilt; saving it as it is would persist the damage.
                self._rebuild_locked("recovery")
            written = self._snapshot_locked(force=True)
            if written is not None:
                return written
            if self._index is None:
                raise PreconditionError(
                    f"shard {self.number} holds no vectors yet, so it has no graph to snapshot "
                    "(its empty store is its whole state); write to it first"
                )
            raise ShardUnavailableError(
                f"shard {self.number}: a graph update failed while the snapshot was being taken, so none was "
                "written; the next maintenance pass rebuilds the graph from the store within seconds: retry then"
            )

    def snapshot_if_changed(self) -> tuple[int, float] | None:
        """Write a snapshot if the graph changed since the latest one; (version, seconds), or None if not."""
        self._check_open()
        with self._maintenance_lock:
            return self._snapshot_locked(force=False)

    def _snapshot_locked(self, force: bool) -> tuple[int, float] | None:
        started = time.perf_counter()
        with self._index_lock:
            if self._index is None or self._needs_rebuild:
                return None
            version = self._applied_version
            record = self._store.snapshot
            if not force and not self._snapshot_stale and record is not None and record.version == version:
                return None
            data = self._index.save()
        assert data is not None
        # A fresh name per snapshot: the recorded file is never overwritten, even at the same version.
        name = f"{_SNAPSHOT_PREFIX}{version:016d}-{time.time_ns()}{_SNAPSHOT_SUFFIX}"
        tmp, path = self.directory / (name + ".tmp"), self.directory / name
        crc, size = zlib.crc32(data), len(data)
        with self._disk_full_guard("snapshot"):
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                _fsync_dir(self.directory)
            except BaseException:
                # A partial file would only hold on to the space that ran out; the recorded snapshot is untouched.
                tmp.unlink(missing_ok=True)
                raise
            finally:
                del data
            try:
                with self._write_lock:
                    self._store.record_snapshot(SnapshotRecord(name, version, size, crc, time.time()))
            except BaseException:
                # Not recorded, so the previous snapshot stays current and this file is dead weight.
                if self._store.snapshot is None or self._store.snapshot.file != name:
                    path.unlink(missing_ok=True)
                raise
        self._snapshot_stale = False
        self._remove_stale_snapshots()
        seconds = time.perf_counter() - started
        metrics.SNAPSHOT_SECONDS.labels(self._label).observe(seconds)
        log.info("snapshot written", shard=self.number, version=version, bytes=size, seconds=round(seconds, 3))
        return version, seconds

    def should_compact(self) -> bool:
        """Whether deleted entries make up enough of the graph to rebuild it."""
        live = len(self._catalog)
        deleted = self._deleted
        return deleted >= self.settings.compact_min_deleted and deleted >= self.settings.compact_ratio * (
            live + deleted
        )

    def compact(self, reason: str = "compaction") -> bool:
        """Rebuild the graph from the store while searches and writes go on, swap it in and snapshot it."""
        self._check_open()
        with self._maintenance_lock:
            if not self.dim:
                return False
            self._rebuild_locked(reason)
            # The old snapshot still carries the tombstones; a fresh one makes the next start lean.
            self._snapshot_locked(force=True)
        return True

    def _rebuild_locked(self, reason: str) -> None:
        """Build a new graph from the store and swap it in (the caller holds `_maintenance_lock`)."""
        dim = self.dim
        started = time.perf_counter()
        with self._store.consistent_read() as conn:
            base_version = self._store.read_version(conn)
            index = self._build(dim, conn)
        with self._write_lock:
            # No commit can happen now: replay what was committed while the graph was built.
            for keys, vectors in self._store.vectors(newer_than=base_version):
                self._add(index, keys, vectors)
            removed = self._store.removed_since(base_version)
            deleted = _count_removed(index.remove(np.asarray(removed, dtype=np.uint64))) if removed else 0
            catalog = self._catalog
            if self._needs_rebuild:
                # A failed graph update may have left the catalog half-updated too.
                catalog = Catalog(self._partitions)
                for key, entry in self._store.entries():
                    catalog.add(key, entry)
            with self._index_lock:
                self._index = index
                self._catalog = catalog
                self._deleted = deleted
                self._applied_version = self._store.version
                self._memory_bytes = int(index.memory_usage)
                self._needs_rebuild = False
        metrics.REBUILDS.labels(self._label, reason).inc()
        log.info(
            "graph rebuilt",
            shard=self.number,
            reason=reason,
            items=len(index),
            seconds=round(time.perf_counter() - started, 3),
        )
        self._publish()

    def maintain(self) -> None:
        """One maintenance pass: rebuild if needed, compact if worthwhile, snapshot if due."""
        if self._closed:
            return
        try:
            if self._needs_rebuild:
                self.compact("recovery")
            elif self.should_compact():
                self.compact()
            elif self.snapshot_due():
                self.snapshot_if_changed()
        except StorageFullError:
            # Already logged as a warning; the next pass retries, so freeing space is all it takes.
            return

    def snapshot_due(self) -> bool:
        """Whether there are changes since the latest snapshot and the snapshot interval has passed."""
        record = self._store.snapshot
        if self._index is None:
            return False
        if self._snapshot_stale:
            return True
        if record is not None and record.version == self._applied_version:
            return False
        age = self.snapshot_age() if record is not None else time.monotonic() - self._opened_at
        return age >= self.settings.snapshot_interval_seconds

    def stats(self) -> ShardStats:
        """Counts, memory and snapshot state."""
        record = self._store.snapshot
        return ShardStats(
            shard=self.number,
            count=len(self._catalog),
            deleted=self._deleted,
            memory_bytes=self._memory_bytes,
            snapshot_age_seconds=self.snapshot_age(),
            snapshot_version=record.version if record else 0,
            version=self._store.version,
            model_id=self._store.model_id,
            dim=self.dim,
            dtype=self.settings.dtype,
            partition_items=tuple(sorted(self._partition_counts().items())),
        )

    def _partition_counts(self) -> dict[int, int]:
        if self._partitions is None:
            return {}
        # Not under _index_lock: stats must not wait for a graph update. Copying a dict is one step under the
        # GIL, so the counts are those before or after some write, never torn.
        return self._catalog.partition_counts()

    def _publish(self) -> None:
        metrics.VECTORS.labels(self._label).set(len(self._catalog))
        metrics.DELETED.labels(self._label).set(self._deleted)
        metrics.MEMORY.labels(self._label).set(self._memory_bytes)
        metrics.VERSION.labels(self._label).set(self._store.version)

    def close(self, snapshot: bool = True) -> None:
        """Write a final snapshot if there are changes (when asked), then release the store and directory."""
        if self._closed:
            return
        if snapshot:
            try:
                self.snapshot_if_changed()
            except StorageFullError:
                pass  # logged as a warning already; the next start replays from the store
            except Exception:
                log.exception("final snapshot failed; the next start replays from the store", shard=self.number)
        with self._maintenance_lock, self._write_lock, self._index_lock:
            self._closed = True
            self._index = None
            self._catalog = Catalog()
            self._store.close()
            self._lock_file.close()
