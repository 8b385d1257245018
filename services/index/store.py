"""The durable store of one shard: SQLite in WAL mode with synchronous=FULL, the source of truth.

Tables:
- `items`: one row per live id with its USearch key, modality, metadata, tags, exact float32 vector and
  the store version that wrote it. Keys come from a counter that never goes back, so a replaced or
  re-added id always gets a fresh key (a key is never reused, which sidesteps usearch #445).
- `removed`: keys taken out of the graph (delete or replace) with the version that removed them, so a
  snapshot covering version V can be brought up to date by replaying `removed` rows newer than V. Rows
  covered by the latest snapshot are pruned when it is recorded.
- `meta`: the store version, the key counter, the model id and dimension, and the latest snapshot's
  file name, version, size, CRC-32 and creation time.
- `log_positions`: with a write log, the last log sequence applied per partition the shard holds (a
  partition moved away by a reshard loses its row and its items in one transaction, `drop_partition`).
  It is written in the same transaction as the items and removals it covers, so after any crash the
  store holds exactly the writes up to its recorded positions: none is lost and none is applied twice
  (`apply_log` checks, inside that transaction, that the position is still the one the batch was read
  after).

Every write is one `BEGIN IMMEDIATE ... COMMIT` transaction; with synchronous=FULL the commit returns
only after the WAL is fsynced, so whatever the caller acknowledges afterwards survives kill -9 and power
loss. The store is not thread-safe for writers: the shard serialises them. Readers use a pool of
connections of their own, each seeing the last committed state (WAL snapshot isolation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from services.index.domain import Entry, Item, StoredItem

SCHEMA_VERSION = 1
CHUNK_ROWS = 4096
# SQLite's default limit on host parameters in one statement is 32766; stay far below it.
MAX_PARAMS = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    key INTEGER NOT NULL UNIQUE,
    modality INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    tags TEXT NOT NULL,
    vector BLOB NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_version ON items(version);
CREATE TABLE IF NOT EXISTS removed (
    key INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS removed_version ON removed(version);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_positions (
    partition INTEGER PRIMARY KEY,
    sequence INTEGER NOT NULL
);
"""


class StoreError(RuntimeError):
    """The store file cannot be used (wrong schema, not WAL-capable)."""


class LogPositionError(RuntimeError):
    """A log batch was read after another position than the one the store holds (a bug: never applied)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """Which USearch snapshot file is current and what it covers."""

    file: str
    version: int
    size: int
    crc32: int
    created_at: float


def _encode_metadata(metadata: Mapping[str, str]) -> str:
    return json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _encode_tags(tags: Sequence[str]) -> str:
    return json.dumps(list(tags), ensure_ascii=False, separators=(",", ":"))


def _decode_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _chunks(values: Sequence[object], size: int = MAX_PARAMS) -> Iterator[Sequence[object]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Store:
    """The SQLite store of one shard; see the module docstring for the schema and the guarantees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = self._connect()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._conn.executescript(_SCHEMA)
        meta = dict(self._conn.execute("SELECT name, value FROM meta").fetchall())
        schema = int(meta.get("schema_version", SCHEMA_VERSION))
        if schema != SCHEMA_VERSION:
            raise StoreError(f"{path}: schema version {schema}, this build reads {SCHEMA_VERSION}")
        if "schema_version" not in meta:
            with self._write() as cur:
                self._set_meta(cur, schema_version=SCHEMA_VERSION)
        self.version = int(meta.get("version", 0))
        self.next_key = int(meta.get("next_key", 0))
        self.model_id = meta.get("model_id", "")
        self.dim = int(meta.get("dim", 0))
        self.snapshot: SnapshotRecord | None = None
        if meta.get("snapshot_file"):
            self.snapshot = SnapshotRecord(
                file=meta["snapshot_file"],
                version=int(meta["snapshot_version"]),
                size=int(meta["snapshot_size"]),
                crc32=int(meta["snapshot_crc32"]),
                created_at=float(meta["snapshot_created_at"]),
            )
        # The last applied write-log sequence per partition (empty in direct mode).
        self.log_positions: dict[int, int] = {
            int(partition): int(sequence)
            for partition, sequence in self._conn.execute("SELECT partition, sequence FROM log_positions")
        }

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit, so nothing commits behind the store's back.
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        # FULL: each commit fsyncs the WAL; NORMAL would lose the last commits on power loss.
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (SQLITE_FULL during COMMIT does); a failing ROLLBACK must
            # not hide the error that caused it, and nothing of the transaction was committed either way.
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _set_meta(cur: sqlite3.Cursor, **values: object) -> None:
        cur.executemany(
            "INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            [(name, str(value)) for name, value in values.items()],
        )

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection (autocommit: each statement sees the latest commit)."""
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._all_readers.append(conn)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._readers.put(conn)

    @contextlib.contextmanager
    def consistent_read(self) -> Iterator[sqlite3.Connection]:
        """A read connection inside one transaction: every query sees the same committed version."""
        with self.reader() as conn:
            conn.execute("BEGIN")
            yield conn

    # --- writes (the caller serialises them) ---------------------------------------------------

    def upsert(self, model_id: str, dim: int, rows: Sequence[Item]) -> tuple[int, list[int], list[int]]:
        """Insert or replace `rows` (distinct ids) in one commit; (version, new keys, replaced keys)."""
        version = self.version + 1
        with self._write() as cur:
            keys, replaced, next_key = self._insert(cur, version, rows)
            self._set_meta(cur, version=version, next_key=next_key, model_id=model_id, dim=dim)
        self.version, self.next_key, self.model_id, self.dim = version, next_key, model_id, dim
        return version, keys, replaced

    def _insert(self, cur: sqlite3.Cursor, version: int, rows: Sequence[Item]) -> tuple[list[int], list[int], int]:
        """Insert or replace `rows` inside the caller's transaction; (new keys, replaced keys, next key)."""
        next_key = self.next_key
        keys: list[int] = []
        replaced: list[int] = []
        for row in rows:
            old = cur.execute("SELECT key FROM items WHERE id = ?", (row.id,)).fetchone()
            if old is not None:
                replaced.append(int(old[0]))
                cur.execute("INSERT INTO removed(key, version) VALUES (?, ?)", (old[0], version))
            cur.execute(
                "INSERT OR REPLACE INTO items(id, key, modality, metadata, tags, vector, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    next_key,
                    row.modality,
                    _encode_metadata(row.metadata),
                    _encode_tags(row.tags),
                    row.vector.astype("<f4").tobytes(),
                    version,
                ),
            )
            keys.append(next_key)
            next_key += 1
        return keys, replaced, next_key

    def delete(self, ids: Sequence[str]) -> tuple[int, list[int]]:
        """Delete the stored ones among `ids` in one commit; (version, their keys)."""
        found: list[tuple[str, int]] = []
        for item_id in dict.fromkeys(ids):
            # Reading outside the transaction is safe: the caller serialises every writer.
            old = self._conn.execute("SELECT key FROM items WHERE id = ?", (item_id,)).fetchone()
            if old is not None:
                found.append((item_id, int(old[0])))
        if not found:
            # Nothing changes: spend neither a version nor an fsync.
            return self.version, []
        version = self.version + 1
        keys = [key for _, key in found]
        with self._write() as cur:
            cur.executemany("DELETE FROM items WHERE id = ?", [(item_id,) for item_id, _ in found])
            cur.executemany("INSERT INTO removed(key, version) VALUES (?, ?)", [(key, version) for key in keys])
            self._set_meta(cur, version=version)
        self.version = version
        return version, keys

    def apply_log(
        self,
        partition: int,
        after: int,
        position: int,
        model_id: str,
        dim: int,
        rows: Sequence[Item],
        deletes: Sequence[str],
    ) -> tuple[int, list[int], list[int]]:
        """Apply one partition's log writes read after `after` and record `position`, all in one commit.

        `rows` (distinct ids) are inserted or replaced and `deletes` (ids not in `rows`) removed when
        stored. Raises LogPositionError, changing nothing, unless the recorded position is still `after`:
        a write the store already covers can never be applied again. The version moves only when an item
        changed. Returns (version, new keys, removed keys: replaced and deleted).
        """
        if position <= after:
            raise LogPositionError(f"partition {partition}: new position {position} is not after {after}")
        version = self.version + 1
        next_key = self.next_key
        with self._write() as cur:
            row = cur.execute("SELECT sequence FROM log_positions WHERE partition = ?", (partition,)).fetchone()
            recorded = int(row[0]) if row is not None else 0
            if recorded != after:
                raise LogPositionError(
                    f"partition {partition}: the store applied the log up to {recorded}, "
                    f"the batch was read after {after}"
                )
            deleted: list[int] = []
            for item_id in deletes:
                old = cur.execute("DELETE FROM items WHERE id = ? RETURNING key", (item_id,)).fetchone()
                if old is not None:
                    deleted.append(int(old[0]))
            cur.executemany("INSERT INTO removed(key, version) VALUES (?, ?)", [(key, version) for key in deleted])
            keys, replaced, next_key = self._insert(cur, version, rows)
            cur.execute(
                "INSERT INTO log_positions(partition, sequence) VALUES (?, ?) "
                "ON CONFLICT(partition) DO UPDATE SET sequence = excluded.sequence",
                (partition, position),
            )
            changed = bool(rows or deleted)
            if rows:
                self._set_meta(cur, version=version, next_key=next_key, model_id=model_id, dim=dim)
            elif deleted:
                self._set_meta(cur, version=version)
        self.log_positions[partition] = position
        if changed:
            self.version, self.next_key = version, next_key
            if rows:
                self.model_id, self.dim = model_id, dim
        return self.version, keys, replaced + deleted

    def drop_partition(self, partition: int, keys: Sequence[int]) -> tuple[int, list[int]]:
        """Forget a write-log partition the shard no longer owns: its items (`keys`) and its position, in one commit.

        After a reshard moved the partition away; a crash before the commit leaves both, and the next start
        drops them again. Returns (version, the keys removed).
        """
        version = self.version + 1
        removed: list[int] = []
        with self._write() as cur:
            for chunk in _chunks(list(keys)):
                marks = ",".join("?" * len(chunk))
                deleted = cur.execute(f"DELETE FROM items WHERE key IN ({marks}) RETURNING key", tuple(chunk))
                removed.extend(int(r[0]) for r in deleted)
            cur.executemany("INSERT INTO removed(key, version) VALUES (?, ?)", [(key, version) for key in removed])
            cur.execute("DELETE FROM log_positions WHERE partition = ?", (partition,))
            if removed:
                self._set_meta(cur, version=version)
        self.log_positions.pop(partition, None)
        if removed:
            self.version = version
        return self.version, removed

    def record_snapshot(self, record: SnapshotRecord) -> None:
        """Make `record` the current snapshot and forget removals it already covers."""
        with self._write() as cur:
            self._set_meta(
                cur,
                snapshot_file=record.file,
                snapshot_version=record.version,
                snapshot_size=record.size,
                snapshot_crc32=record.crc32,
                snapshot_created_at=repr(record.created_at),
            )
            cur.execute("DELETE FROM removed WHERE version <= ?", (record.version,))
        self.snapshot = record

    # --- reads ---------------------------------------------------------------------------------

    def get(self, ids: Sequence[str], include_vectors: bool) -> dict[str, StoredItem]:
        """The stored items among `ids`, by id."""
        columns = "id, modality, metadata, tags, version" + (", vector" if include_vectors else "")
        found: dict[str, StoredItem] = {}
        unique = list(dict.fromkeys(ids))
        with self.reader() as conn:
            for chunk in _chunks(unique):
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {columns} FROM items WHERE id IN ({marks})", tuple(chunk)):
                    found[row[0]] = StoredItem(
                        id=row[0],
                        modality=int(row[1]),
                        metadata=json.loads(row[2]),
                        tags=tuple(json.loads(row[3])),
                        version=int(row[4]),
                        vector=_decode_vector(row[5]) if include_vectors else None,
                    )
        return found

    def vectors_by_key(self, keys: Iterable[int]) -> dict[int, np.ndarray]:
        """The exact stored vectors of the live ones among `keys`."""
        out: dict[int, np.ndarray] = {}
        wanted = list(keys)
        with self.reader() as conn:
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                for key, blob in conn.execute(f"SELECT key, vector FROM items WHERE key IN ({marks})", tuple(chunk)):
                    out[int(key)] = _decode_vector(blob)
        return out

    def entries(self) -> Iterator[tuple[int, Entry]]:
        """Every live item's key and catalog entry (no vectors)."""
        with self.reader() as conn:
            cursor = conn.execute("SELECT key, id, modality, metadata, tags, version FROM items")
            while rows := cursor.fetchmany(CHUNK_ROWS):
                for key, item_id, modality, metadata, tags, version in rows:
                    yield (
                        int(key),
                        Entry(
                            item_id,
                            int(modality),
                            json.loads(metadata),
                            tuple(json.loads(tags)),
                            int(version),
                        ),
                    )

    @staticmethod
    def read_version(conn: sqlite3.Connection) -> int:
        """The store version as seen by `conn` (inside a consistent_read, the version of its snapshot)."""
        row = conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        return int(row[0]) if row is not None else 0

    def vectors(
        self, conn: sqlite3.Connection | None = None, newer_than: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, float32 vectors) of live items in chunks, all or only those written after `newer_than`."""
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.reader())
            if newer_than is None:
                cursor = conn.execute("SELECT key, vector FROM items ORDER BY key")
            else:
                cursor = conn.execute("SELECT key, vector FROM items WHERE version > ? ORDER BY key", (newer_than,))
            while rows := cursor.fetchmany(CHUNK_ROWS):
                keys = np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
                matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32)
                yield keys, matrix.reshape(len(rows), -1)

    def removed_since(self, version: int) -> list[int]:
        """Keys removed by writes newer than `version`."""
        with self.reader() as conn:
            rows = conn.execute("SELECT key FROM removed WHERE version > ?", (version,)).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        """Close every connection (after the last caller finished)."""
        for conn in self._all_readers:
            conn.close()
        self._all_readers.clear()
        self._conn.close()
