"""Entry point of the index service: `python -m services.index` or `crossmodal-index`."""

from __future__ import annotations

import sys

from services.common.entrypoint import service_main
from services.index.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, IndexConfig
from services.index.service import IndexService


def main() -> int:
    """Run the index service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-index", IndexConfig, IndexService, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT
    )


if __name__ == "__main__":
    sys.exit(main())
