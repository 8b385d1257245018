"""Configuration of the gateway service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.config import ConfigError, ServerConfig, setting
from services.common.limits import Limits
from services.common.placement import Placement
from services.common.writelog import LogConfig

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9100


def parse_shard_map(spec: str) -> tuple[tuple[str, ...], ...]:
    """Parse 'a:1,b:1;c:1' into ((replica, ...) per shard); shards by ';', replicas by ','."""
    shards = []
    for number, part in enumerate(spec.split(";")):
        replicas = tuple(r.strip() for r in part.split(",") if r.strip())
        if not replicas:
            raise ConfigError(f"CROSSMODAL_GATEWAY_SHARDS: shard {number} has no replica address in {spec!r}")
        for address in replicas:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"CROSSMODAL_GATEWAY_SHARDS: {address!r} is not host:port")
        shards.append(replicas)
    return tuple(shards)


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway reads from the environment."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    limits: Limits = dataclasses.field(default_factory=Limits)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    text_encoders: tuple[str, ...] = setting(
        "GATEWAY_TEXT_ENCODERS",
        ("127.0.0.1:50052",),
        "Text encoder addresses (host:port, comma-separated); a call that gets UNAVAILABLE is retried on the next one.",
    )
    image_encoders: tuple[str, ...] = setting(
        "GATEWAY_IMAGE_ENCODERS",
        ("127.0.0.1:50053",),
        "Image encoder addresses (host:port, comma-separated); empty for a bundle without an image tower (text and "
        "audio): image queries, image items and videos are then FAILED_PRECONDITION.",
    )
    audio_encoders: tuple[str, ...] = setting(
        "GATEWAY_AUDIO_ENCODERS",
        (),
        "Audio encoder addresses (host:port, comma-separated); empty: the cluster has no audio tower and every "
        "audio request (a sound query, target MODALITY_AUDIO, an audio item or IngestAudio) is refused with "
        "FAILED_PRECONDITION.",
    )
    shards: str = setting(
        "GATEWAY_SHARDS",
        "127.0.0.1:50054",
        "Shard map: shards separated by ';', the replicas of a shard by ',' "
        "(e.g. `idx-0-0:50054,idx-0-1:50054;idx-1-0:50054,idx-1-1:50054`). Shard n is the n-th entry. Without a "
        "write log items are routed by a stable hash of their id, so the number of shards must not change once "
        "data is stored; with one, the partition map says which shard owns what, this list may name spare "
        "shards, and `crossmodal reshard` moves partitions between them.",
    )
    search_timeout_ms: int = setting(
        "GATEWAY_SEARCH_TIMEOUT_MS",
        2000,
        "Deadline of one shard search when the caller set a longer one or "
        "none; a shard that misses it is skipped and named in `partial_shards`.",
        min=1,
        max=600_000,
    )
    hedge_delay_ms: int = setting(
        "GATEWAY_HEDGE_DELAY_MS",
        100,
        "After this long without an answer, a shard search is also sent to "
        "another replica and the first answer wins (0 disables hedging).",
        min=0,
        max=600_000,
    )
    coalesce_in_flight: int = setting(
        "GATEWAY_COALESCE_IN_FLIGHT",
        2,
        "Calls in flight at once per shard replica and per text encoder address for searches; searches that "
        "arrive while that many are open go together in the next call (no timer: a lone search goes at once). "
        "Cuts the CPU per search under load; 0 gives every search its own calls.",
        min=0,
        max=1024,
    )
    write_timeout_ms: int = setting(
        "GATEWAY_WRITE_TIMEOUT_MS", 30_000, "Deadline of one upsert or delete on a replica.", min=1
    )
    encode_timeout_ms: int = setting("GATEWAY_ENCODE_TIMEOUT_MS", 30_000, "Deadline of one encoder call.", min=1)
    default_k: int = setting("GATEWAY_DEFAULT_K", 10, "K when a search leaves it 0.", min=1)
    ingest_batch: int = setting(
        "GATEWAY_INGEST_BATCH", 32, "Items of an ingest stream encoded and written together.", min=1, max=1024
    )
    ingest_max_wait_ms: int = setting(
        "GATEWAY_INGEST_MAX_WAIT_MS", 20, "How long a partial ingest batch waits for more items.", min=0
    )
    ingest_concurrency: int = setting(
        "GATEWAY_INGEST_CONCURRENCY",
        4,
        "Ingest batches of one stream in flight at once (encode + write); "
        "the stream stops reading while they are all busy (backpressure).",
        min=1,
        max=64,
    )
    ingest_idle_seconds: float = setting(
        "GATEWAY_INGEST_IDLE_SECONDS",
        60.0,
        "An Ingest stream that sends no item for this long while none of its batches is in flight is closed "
        "with DEADLINE_EXCEEDED, so idle clients cannot hold every ingest slot.",
        min=0.1,
        max=86_400,
    )
    video_max_seconds: float = setting(
        "GATEWAY_VIDEO_MAX_SECONDS",
        4 * 3600.0,
        "Longest video IngestVideo accepts, in seconds (by its header and by its frames' times); a longer one "
        "is refused with INVALID_ARGUMENT and nothing of it is stored.",
        min=1,
    )
    video_max_frames: int = setting(
        "GATEWAY_VIDEO_MAX_FRAMES",
        20_000,
        "Most frames of one video; one more and the video is refused with INVALID_ARGUMENT (nothing stored). The "
        "gateway holds each frame's vector until the video is complete: dim x 4 bytes per frame.",
        min=1,
        max=1_000_000,
    )
    video_overfetch: int = setting(
        "GATEWAY_VIDEO_OVERFETCH",
        20,
        "A moment search (target MODALITY_VIDEO) asks the shards for K times this many frames (at most "
        "CROSSMODAL_MAX_K) and merges them into K moments.",
        min=1,
        max=1000,
    )
    video_moment_margin: float = setting(
        "GATEWAY_VIDEO_MOMENT_MARGIN",
        0.03,
        "A frame belongs to a moment when its score is within this of its video's best frame's score (cosine).",
        min=0.0,
        max=2.0,
    )
    audio_max_seconds: float = setting(
        "GATEWAY_AUDIO_MAX_SECONDS",
        4 * 3600.0,
        "Longest sound IngestAudio accepts (and longest audio track of a video), in seconds, by its header and "
        "by its samples; a longer one is refused with INVALID_ARGUMENT and nothing of it is stored.",
        min=1,
    )
    audio_max_chunk_bytes: int = setting(
        "GATEWAY_AUDIO_MAX_CHUNK_BYTES",
        1024 * 1024,
        "Most PCM bytes in one AudioChunk of an IngestAudio or IngestVideo stream (16-bit mono: 1 MiB is 11 s "
        "at 48 kHz).",
        min=2,
        max=64 * 1024 * 1024,
    )
    audio_min_sample_rate: int = setting(
        "GATEWAY_AUDIO_MIN_SAMPLE_RATE", 4000, "Lowest sample rate of streamed PCM, in Hz.", min=1000
    )
    audio_max_sample_rate: int = setting(
        "GATEWAY_AUDIO_MAX_SAMPLE_RATE", 192_000, "Highest sample rate of streamed PCM, in Hz.", min=1000
    )
    max_in_flight_searches: int = setting(
        "GATEWAY_MAX_IN_FLIGHT_SEARCHES",
        32,
        "Searches the gateway handles at once; one more is refused at once with RESOURCE_EXHAUSTED "
        "(load shedding: admitted searches keep a bounded latency of about this many divided by the "
        "cluster's searches per second). 0: unbounded.",
        min=0,
    )
    max_ingest_streams: int = setting(
        "GATEWAY_MAX_INGEST_STREAMS",
        8,
        "Ingest streams open at once; one more is refused at once with RESOURCE_EXHAUSTED. Each stream "
        "keeps up to INGEST_CONCURRENCY x INGEST_BATCH items in flight; an idle one is closed after "
        "INGEST_IDLE_SECONDS. 0: unbounded.",
        min=0,
    )
    log_partitions: int = setting(
        "GATEWAY_LOG_PARTITIONS",
        64,
        "Partitions of the write log (a power of two, at least the shard count); an item's id picks one and a "
        "partition belongs to one shard. Fixed when the log's stream is created.",
        min=1,
        max=4096,
    )
    log_replicas: int = setting(
        "GATEWAY_LOG_REPLICAS",
        1,
        "Copies JetStream keeps of the log (its stream replicas; 3 on a 3-node NATS cluster). A write is "
        "acknowledged once a quorum of them stored it.",
        min=1,
        max=5,
    )
    log_max_bytes: int = setting(
        "GATEWAY_LOG_MAX_BYTES",
        -1,
        "Largest size of the write log in bytes (-1: no limit but the disk); when full, writes get "
        "RESOURCE_EXHAUSTED and nothing stored is dropped.",
        min=-1,
    )
    reshard_grace_seconds: float = setting(
        "GATEWAY_RESHARD_GRACE_SECONDS",
        5.0,
        "During a reshard, how long old owners keep a moved partition after the partition map flipped, so "
        "searches planned before the flip still find it there; longer than GATEWAY_SEARCH_TIMEOUT_MS.",
        min=0.0,
        max=3600,
    )
    api_keys_file: Path | None = setting(
        "GATEWAY_API_KEYS_FILE",
        None,
        "File with one API key per line (`#` comments allowed); when set, "
        "every call needs `authorization: Bearer <key>` (UNAUTHENTICATED otherwise).",
    )
    rate_limit_rps: float = setting(
        "GATEWAY_RATE_LIMIT_RPS",
        0.0,
        "Calls per second allowed per API key (without keys, all callers share "
        "one budget); excess calls get RESOURCE_EXHAUSTED at once. 0 disables the limit.",
        min=0,
    )
    rate_limit_burst: int = setting(
        "GATEWAY_RATE_LIMIT_BURST", 20, "Calls a key may make at once above its steady rate.", min=1
    )

    def __post_init__(self) -> None:
        shard_map = parse_shard_map(self.shards)
        if not self.log.enabled and any(len(replicas) > 1 for replicas in shard_map):
            raise ConfigError(
                "CROSSMODAL_GATEWAY_SHARDS names more than one replica of a shard, but there is no write log: "
                "direct writes cannot keep replicas identical (one that was down would miss writes for good). "
                "Set CROSSMODAL_LOG_URL to a NATS JetStream server (`crossmodal up --replicas 2` starts one), "
                "or list one replica per shard"
            )
        if self.log.enabled:
            partitions = self.log_partitions
            if partitions & (partitions - 1) or partitions < len(shard_map):
                raise ConfigError(
                    f"CROSSMODAL_GATEWAY_LOG_PARTITIONS={partitions}: must be a power of two and at least the "
                    f"{len(shard_map)} shards"
                )
        if not self.text_encoders:
            raise ConfigError("CROSSMODAL_GATEWAY_TEXT_ENCODERS needs at least one address")
        if not self.image_encoders and not self.audio_encoders:
            raise ConfigError(
                "CROSSMODAL_GATEWAY_IMAGE_ENCODERS and CROSSMODAL_GATEWAY_AUDIO_ENCODERS are both empty: list the "
                "encoders of at least one tower besides text (the ones the bundle has)"
            )
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ConfigError(f"CROSSMODAL_GATEWAY_API_KEYS_FILE: no such file: {self.api_keys_file}")
        if self.audio_min_sample_rate > self.audio_max_sample_rate:
            raise ConfigError(
                "CROSSMODAL_GATEWAY_AUDIO_MIN_SAMPLE_RATE must not exceed CROSSMODAL_GATEWAY_AUDIO_MAX_SAMPLE_RATE"
            )
        if self.default_k > self.limits.max_k:
            raise ConfigError("CROSSMODAL_GATEWAY_DEFAULT_K must not exceed CROSSMODAL_MAX_K")

    @property
    def shard_map(self) -> tuple[tuple[str, ...], ...]:
        """The replica addresses of every shard, by shard number."""
        return parse_shard_map(self.shards)

    @property
    def placement(self) -> Placement:
        """Where items live: by partition of the log when there is one, else by hash modulo the shard count."""
        return Placement(len(self.shard_map), self.log_partitions if self.log.enabled else None)
