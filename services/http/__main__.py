"""Entry point of the HTTP/JSON service: `python -m services.http` or `crossmodal-http`."""

from __future__ import annotations

import sys

from services.common.config import ConfigError, load_config
from services.http.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, HttpConfig
from services.http.service import run


def main() -> int:
    """Run the HTTP service until SIGTERM; the process exit status."""
    try:
        config = load_config(HttpConfig, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    except ConfigError as exc:
        # Logging is not configured yet and a bad value must be obvious to whoever reads the pod log.
        print(f"crossmodal-http: configuration error: {exc}", file=sys.stderr)
        return 2
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
