"""Configuration of the index service: which shards this process serves, where, and how they are tuned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.config import ConfigError, ServerConfig, setting

DEFAULT_PORT = 50054
DEFAULT_METRICS_PORT = 9103

DTYPES = ("f32", "f16", "i8")


@dataclasses.dataclass(frozen=True)
class ShardSettings:
    """How every shard of this process builds, searches, snapshots and compacts its USearch index."""

    dtype: str = "f32"
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    dim: int = 0
    threads: int = 0
    snapshot_interval_seconds: float = 300.0
    compact_ratio: float = 0.25
    compact_min_deleted: int = 1000
    filter_overfetch: int = 4
    max_metadata_bytes: int = 4096
    # A filter whose narrowest part lists m keys is brute-forced while m * m <= factor * k * n (see
    # Shard._search_locked); 0 always searches the graph. Not an environment setting: tests use it.
    brute_force_factor: float = 4.0


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Everything the index service reads from the environment."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    data_dir: Path = setting(
        "INDEX_DATA_DIR",
        Path("data/index"),
        "Directory holding one sub-directory per shard (shard-<n>/: store.sqlite3 and USearch snapshots).",
    )
    shards: tuple[int, ...] = setting(
        "INDEX_SHARDS",
        (0,),
        "Comma-separated shard numbers this process serves; requests for other shards get NOT_FOUND.",
        min=0,
        max=65535,
    )
    dim: int = setting(
        "INDEX_DIM",
        0,
        "Vector dimension every shard accepts (0: learnt from the first write and then fixed).",
        min=0,
        max=65536,
    )
    dtype: str = setting(
        "INDEX_DTYPE",
        "f32",
        "Scalar type of the vectors inside USearch (the store always "
        "keeps exact float32); a change rebuilds the index at start.",
        choices=DTYPES,
    )
    connectivity: int = setting(
        "INDEX_CONNECTIVITY",
        16,
        "HNSW links per node (M); a change rebuilds the index at start.",
        min=2,
        max=256,
    )
    expansion_add: int = setting(
        "INDEX_EXPANSION_ADD",
        128,
        "HNSW candidate list size while inserting (efConstruction).",
        min=1,
        max=4096,
    )
    expansion_search: int = setting(
        "INDEX_EXPANSION_SEARCH",
        64,
        "HNSW candidate list size while searching (ef); higher is slower and more accurate.",
        min=1,
        max=4096,
    )
    threads: int = setting(
        "INDEX_THREADS",
        0,
        "Threads USearch uses for bulk inserts and rebuilds (0: one per CPU).",
        min=0,
        max=1024,
    )
    workers: int = setting(
        "INDEX_WORKERS",
        8,
        "Worker threads that run store commits and searches off the event loop.",
        min=1,
        max=1024,
    )
    snapshot_interval_seconds: float = setting(
        "INDEX_SNAPSHOT_INTERVAL_SECONDS",
        300.0,
        "How often a shard with new writes saves a USearch snapshot in the background (also on shutdown).",
        min=0.05,
        max=86400,
    )
    compact_ratio: float = setting(
        "INDEX_COMPACT_RATIO",
        0.25,
        "Rebuild a shard's graph in the background once this fraction of its USearch entries are deleted ones.",
        min=0.01,
        max=1.0,
    )
    compact_min_deleted: int = setting(
        "INDEX_COMPACT_MIN_DELETED",
        1000,
        "Never compact a shard with fewer deleted entries than this.",
        min=1,
    )
    filter_overfetch: int = setting(
        "INDEX_FILTER_OVERFETCH",
        4,
        "With a filter or a modality, the first graph search asks for K times this many candidates before widening.",
        min=1,
        max=1000,
    )
    max_k: int = setting("INDEX_MAX_K", 1000, "Largest K a search may ask for.", min=1, max=100_000)
    max_batch: int = setting(
        "INDEX_MAX_BATCH", 1000, "Most items or ids in one upsert, delete or get.", min=1, max=100_000
    )
    max_metadata_bytes: int = setting(
        "INDEX_MAX_METADATA_BYTES",
        4096,
        "Most bytes of metadata (keys, values and tags) one item may carry.",
        min=64,
        max=1 << 20,
    )

    def __post_init__(self) -> None:
        if not self.shards:
            raise ConfigError("CROSSMODAL_INDEX_SHARDS: name at least one shard")
        if len(set(self.shards)) != len(self.shards):
            raise ConfigError(f"CROSSMODAL_INDEX_SHARDS: a shard is listed twice: {self.shards}")

    def shard_settings(self) -> ShardSettings:
        """The per-shard tuning derived from this configuration."""
        return ShardSettings(
            dtype=self.dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
            dim=self.dim,
            threads=self.threads,
            snapshot_interval_seconds=self.snapshot_interval_seconds,
            compact_ratio=self.compact_ratio,
            compact_min_deleted=self.compact_min_deleted,
            filter_overfetch=self.filter_overfetch,
            max_metadata_bytes=self.max_metadata_bytes,
        )
