"""Entry point of the gateway service: `python -m services.gateway` or `crossmodal-gateway`."""

from __future__ import annotations

import sys

from services.common.entrypoint import service_main
from services.gateway.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, GatewayConfig
from services.gateway.service import GatewayService


def main() -> int:
    """Run the gateway service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-gateway", GatewayConfig, GatewayService, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT
    )


if __name__ == "__main__":
    sys.exit(main())
