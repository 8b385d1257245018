"""Configuration of the HTTP/JSON service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.config import ConfigError, ServerConfig, setting

DEFAULT_PORT = 8080
DEFAULT_METRICS_PORT = 9109
# A 20 MiB image (CROSSMODAL_MAX_IMAGE_BYTES' default) is 26.7 MiB of base64, plus room for the rest of the JSON.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    """Everything the HTTP service reads from the environment.

    The shared server settings apply as for the gRPC services: HOST and PORT are the HTTP listener's,
    TLS_CERT_FILE/TLS_KEY_FILE make it HTTPS, the CLIENT_TLS_* settings secure its channel to the gateway,
    GRACE_SECONDS bounds the drain on SIGTERM and RPC_LOG_SLOW_MS picks the requests logged at info.
    """

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    gateway: str = setting("HTTP_GATEWAY", "127.0.0.1:50051", "The gateway's gRPC address (host:port).")
    gateway_timeout_seconds: float = setting(
        "HTTP_GATEWAY_TIMEOUT_SECONDS",
        30.0,
        "Deadline of one gateway call made for a request (an Ingest stream has none; the gateway closes idle ones).",
        min=0.01,
        max=3600,
    )
    max_body_bytes: int = setting(
        "HTTP_MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        "Largest JSON body, NDJSON line or uploaded file accepted, in bytes; more gets 413. An NDJSON or multipart "
        "ingest is streamed, so only each line or file is bounded, not the whole upload.",
        min=1024,
        max=2**31 - 1,
    )
    max_headers: int = setting(
        "HTTP_MAX_HEADERS",
        100,
        "Most request headers accepted; more gets 431. Past four times this, the parser closes the connection.",
        min=8,
        max=10_000,
    )
    max_header_bytes: int = setting(
        "HTTP_MAX_HEADER_BYTES",
        16 * 1024,
        "Most bytes of request headers (names and values together) accepted; more gets 431.",
        min=1024,
        max=1024 * 1024,
    )
    idle_timeout_seconds: float = setting(
        "HTTP_IDLE_TIMEOUT_SECONDS",
        15.0,
        "A connection that does not complete a request for this long is closed (idle keep-alive connections, "
        "and clients that trickle their headers in).",
        min=0.1,
        max=3600,
    )
    body_timeout_seconds: float = setting(
        "HTTP_BODY_TIMEOUT_SECONDS",
        30.0,
        "Longest wait for the next part of a request body; a slower client gets 408.",
        min=0.1,
        max=3600,
    )
    media_roots: tuple[Path, ...] = setting(
        "HTTP_MEDIA_ROOTS",
        (),
        "Folders (comma-separated) whose files may be served as thumbnails and media: only the file a stored "
        "item's metadata `path` names, and only when it lies under one of these. Empty: no media is served.",
    )
    thumbnail_size: int = setting(
        "HTTP_THUMBNAIL_SIZE", 256, "Default longest side of a thumbnail, in pixels.", min=16, max=2048
    )
    thumbnail_cache_entries: int = setting(
        "HTTP_THUMBNAIL_CACHE_ENTRIES",
        512,
        "Thumbnails kept in memory (least recently used dropped; about 10-30 KB each at 256 px). 0 disables.",
        min=0,
        max=1_000_000,
    )

    def __post_init__(self) -> None:
        host, _, port = self.gateway.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"CROSSMODAL_HTTP_GATEWAY: {self.gateway!r} is not host:port")
        for root in self.media_roots:
            if not root.is_absolute():
                raise ConfigError(f"CROSSMODAL_HTTP_MEDIA_ROOTS: {root} is not an absolute path")
            if not root.is_dir():
                raise ConfigError(f"CROSSMODAL_HTTP_MEDIA_ROOTS: no such folder: {root}")
