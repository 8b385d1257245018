"""Prometheus metrics of the HTTP service: requests by route, method and status, latency, thumbnails, ingest lines."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import LATENCY_BUCKETS

HTTP_REQUESTS = Counter(
    "crossmodal_http_requests",
    "HTTP requests answered, by route template (e.g. /v1/items/{ids}), method and HTTP status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "crossmodal_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "crossmodal_http_in_flight", "HTTP requests being handled right now, by route template.", ["route"]
)
THUMBNAILS = Counter(
    "crossmodal_http_thumbnails",
    "Thumbnails served, by whether the in-memory cache had them (hit) or they were made (miss).",
    ["cache"],
)
INGEST_LINES = Counter(
    "crossmodal_http_ingest_lines",
    "NDJSON lines and uploaded files forwarded to the gateway's streams, by rpc.",
    ["rpc"],
)
