"""Configuration of the index service: which shards this process serves, where, and how they are tuned.

`ShardSettings` is the tuning every shard of a process shares; `IndexConfig` extends it with what only
the process needs (server, data directory, shard numbers, worker threads, the write log), so each setting and its
default is written once and a shard can be handed the whole configuration.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from usearch.index import MetricKind, ScalarKind

from services.common.config import ConfigError, ServerConfig, setting
from services.common.limits import Limits
from services.common.writelog import LogConfig

DEFAULT_PORT = 50054
DEFAULT_METRICS_PORT = 9103


@dataclasses.dataclass(frozen=True)
class Precision:
    """How the vectors of one CROSSMODAL_INDEX_DTYPE sit in USearch and how its results are scored."""

    scalar: ScalarKind
    metric: MetricKind
    # Whether a search fetches K * factor candidates and re-ranks them by exact cosine on the stored float32.
    reranked: bool


# The one list of dtypes. Vectors enter the graph normalised, so inner product ranks exactly like cosine
# and skips two norms per distance (measured ~10% faster for f32, ~50% for f16). i8 keeps cos: USearch
# normalises while quantising to i8, and its i8 inner product is not on a cosine scale. USearch quantises
# i8 after normalising (value * 127), which leaves a 512-d unit vector ~5 levels per component: recall@10
# drops to ~0.8, so i8 results are re-ranked by exact cosine.
PRECISIONS: dict[str, Precision] = {
    "f32": Precision(ScalarKind.F32, MetricKind.IP, reranked=False),
    "f16": Precision(ScalarKind.F16, MetricKind.IP, reranked=False),
    "i8": Precision(ScalarKind.I8, MetricKind.Cos, reranked=True),
}


@dataclasses.dataclass(frozen=True)
class ShardSettings:
    """How every shard of this process builds, searches, snapshots and compacts its USearch index."""

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
        choices=tuple(PRECISIONS),
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
    # The contract's limits (CROSSMODAL_MAX_K, ...), read alike by every service.
    limits: Limits = dataclasses.field(default_factory=Limits)
    # A filter whose narrowest part lists m keys is brute-forced while m * m <= factor * k * n (see
    # Shard._search_locked); 0 always searches the graph. Not an environment setting: tests use it.
    brute_force_factor: float = 4.0

    @property
    def precision(self) -> Precision:
        """The USearch scalar kind, metric and re-ranking of the configured dtype."""
        return PRECISIONS[self.dtype]


@dataclasses.dataclass(frozen=True)
class IndexConfig(ShardSettings):
    """Everything the index service reads from the environment: the shard tuning plus the process's own."""

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
    workers: int = setting(
        "INDEX_WORKERS",
        8,
        "Worker threads that run store commits and searches off the event loop.",
        min=1,
        max=1024,
    )
    # The write log (CROSSMODAL_LOG_URL, ...): empty URL, direct mode (the gateway writes this replica);
    # set, the replica applies its shards' partitions of the log and refuses direct writes.
    log: LogConfig = dataclasses.field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if not self.shards:
            raise ConfigError("CROSSMODAL_INDEX_SHARDS: name at least one shard")
        if len(set(self.shards)) != len(self.shards):
            raise ConfigError(f"CROSSMODAL_INDEX_SHARDS: a shard is listed twice: {self.shards}")
