"""Configuration of the gateway service."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9100


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway service reads from the environment."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
