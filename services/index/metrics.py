"""Prometheus metrics of the index service (per shard)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

VECTORS = Gauge("crossmodal_index_vectors", "Live items in the shard.", ["shard"])
DELETED = Gauge(
    "crossmodal_index_deleted_vectors",
    "Entries deleted in the shard's USearch graph and not yet compacted away.",
    ["shard"],
)
MEMORY = Gauge("crossmodal_index_memory_bytes", "Bytes of memory used by the shard's USearch index.", ["shard"])
SNAPSHOT_AGE = Gauge(
    "crossmodal_index_snapshot_age_seconds",
    "Seconds since the shard's latest snapshot (-1 when it has none).",
    ["shard"],
)
VERSION = Gauge("crossmodal_index_store_version", "The shard store's current version.", ["shard"])
SEARCH_SECONDS = Histogram(
    "crossmodal_index_search_seconds",
    "Time a shard spent answering one search (graph, filter and result building).",
    ["shard"],
    buckets=LATENCY_BUCKETS,
)
SEARCH_EXAMINED = Histogram(
    "crossmodal_index_search_examined",
    "Candidates a shard examined for one search (above K when a filter widened it).",
    ["shard"],
    buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
)
WRITE_SECONDS = Histogram(
    "crossmodal_index_write_seconds",
    "Time of one upsert or delete batch: store commit (fsync) and graph update.",
    ["shard", "op"],
    buckets=LATENCY_BUCKETS,
)
SNAPSHOT_SECONDS = Histogram(
    "crossmodal_index_snapshot_seconds",
    "Time to write one snapshot (serialise, checksum, fsync, rename, record).",
    ["shard"],
    buckets=LATENCY_BUCKETS,
)
REBUILDS = Counter(
    "crossmodal_index_rebuilds",
    "Times a shard rebuilt its graph from the store, by reason (missing, damaged, "
    "config_changed, inconsistent, compaction, recovery).",
    ["shard", "reason"],
)
WRITE_ERRORS = Counter(
    "crossmodal_index_write_errors",
    "Writes (upsert, delete, snapshot) a shard refused and rolled back, by reason (disk_full).",
    ["shard", "op", "reason"],
)
LOG_APPLIED_SEQUENCE = Gauge(
    "crossmodal_index_log_applied_sequence",
    "With a write log: the last log sequence the shard applied, per partition it owns.",
    ["shard", "partition"],
)
LOG_LAG_MESSAGES = Gauge(
    "crossmodal_index_log_lag_messages",
    "With a write log: writes of the shard's partitions in the log that it has not applied yet.",
    ["shard"],
)
LOG_LAG_SECONDS = Gauge(
    "crossmodal_index_log_lag_seconds",
    "With a write log: age of the oldest write of the shard's partitions not applied yet (0 when caught up).",
    ["shard"],
)
LOG_APPLIED = Counter(
    "crossmodal_index_log_applied",
    "With a write log: log writes the shard applied, by op (upsert, delete).",
    ["shard", "op"],
)
LOG_SKIPPED = Counter(
    "crossmodal_index_log_skipped",
    "With a write log: log messages the shard skipped, by reason (undecodable, misrouted, model, invalid, "
    "already_applied); their position still advances.",
    ["shard", "reason"],
)
MAP_VERSION = Gauge(
    "crossmodal_index_partition_map_version",
    "With a write log: the latest partition map version this process knows (resharding moves it on).",
)
PARTITIONS_DROPPED = Counter(
    "crossmodal_index_partitions_dropped",
    "With a write log: partitions the shard deleted after a reshard moved them to another shard.",
    ["shard"],
)
