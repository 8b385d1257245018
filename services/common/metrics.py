"""Prometheus metrics shared by every service, and the HTTP endpoint that exposes them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Latency buckets from 0.5 ms to 60 s: wide enough for a shard search and a batch of ViT-B-32 images.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

RPC_REQUESTS = Counter(
    "crossmodal_rpc_requests",
    "RPCs handled, by service, method and final gRPC status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "crossmodal_rpc_duration_seconds",
    "Time from the start of an RPC to its final status, by service and method.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge(
    "crossmodal_rpc_in_flight",
    "RPCs being handled right now, by service and method.",
    ["service", "method"],
)
BUILD_INFO = Gauge(
    "crossmodal_build_info", "Constant 1, labelled with the service and version.", ["service", "version"]
)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serve /metrics over HTTP on `port` (0: a free one) and return the bound port."""
    httpd, _thread = start_http_server(port, addr=host)
    return int(httpd.server_port)
