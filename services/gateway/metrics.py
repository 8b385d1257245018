"""Gateway metrics: encoder and fan-out latency, shard errors, partial answers, hedges, ingest outcomes, shedding."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

SHARD_SEARCH_SECONDS = Histogram(
    "crossmodal_gateway_shard_search_seconds",
    "Time until a shard's search answered (hedges included).",
    ["shard"],
    buckets=LATENCY_BUCKETS,
)
ENCODE_SECONDS = Histogram(
    "crossmodal_gateway_encode_seconds",
    "Time until an encoder call answered, seen from the gateway (failovers included), by tower.",
    ["modality"],
    buckets=LATENCY_BUCKETS,
)
SHARD_ERRORS = Counter(
    "crossmodal_gateway_shard_errors", "Shard replica calls that failed or missed their deadline.", ["shard", "replica"]
)
PARTIAL_RESPONSES = Counter("crossmodal_gateway_partial_responses", "Searches answered without one or more shards.")
HEDGED_REQUESTS = Counter(
    "crossmodal_gateway_hedged_requests", "Shard reads sent to a second replica after the hedge delay."
)
ENCODER_RETRIES = Counter(
    "crossmodal_gateway_encoder_retries", "Encoder calls retried on another address.", ["modality"]
)
INGEST_ITEMS = Counter("crossmodal_gateway_ingest_items", "Ingested items by final status code.", ["code"])
SHED_REQUESTS = Counter(
    "crossmodal_gateway_shed_requests",
    "Calls refused with RESOURCE_EXHAUSTED because the gateway was at capacity (load shedding), by method.",
    ["method"],
)
ADMISSION_IN_FLIGHT = Gauge(
    "crossmodal_gateway_admitted_in_flight",
    "Calls holding an admission slot (Search: searches in flight; Ingest: open streams), by method.",
    ["method"],
)
VIDEO_INGESTS = Counter(
    "crossmodal_gateway_video_ingests",
    "IngestVideo calls that reached the write, by outcome (stored, failed).",
    ["outcome"],
)
VIDEO_FRAMES = Counter("crossmodal_gateway_video_frames", "Frames of videos stored.")
MOMENT_SEARCHES = Histogram(
    "crossmodal_gateway_moment_frames",
    "Frames a moment search merged into moments.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
AUDIO_INGESTS = Counter(
    "crossmodal_gateway_audio_ingests",
    "IngestAudio calls by outcome (stored; failed while writing). Refused streams count as RPC errors.",
    ["outcome"],
)
AUDIO_WINDOWS = Counter(
    "crossmodal_gateway_audio_windows", "Audio windows stored (of long sounds and of videos' audio tracks)."
)
MAP_VERSION = Gauge(
    "crossmodal_gateway_partition_map_version",
    "With a write log: the partition map version searches and reads are planned at.",
)
RESHARD_PARTITIONS_MOVING = Gauge(
    "crossmodal_gateway_reshard_partitions_moving",
    "Partitions the reshard this gateway drives is moving (0 when none is under way).",
)
RESHARD_ITEMS_COPIED = Gauge(
    "crossmodal_gateway_reshard_items_copied",
    "Items of the moving partitions their new shards store so far, in the reshard this gateway drives.",
)
RESHARD_LAG = Gauge(
    "crossmodal_gateway_reshard_lag",
    "Log messages of the moving partitions the slowest new-owner replica has yet to apply.",
)
