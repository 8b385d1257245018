"""The `main()` every service's __main__ uses: load config, report config errors plainly, run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from services.common.config import ConfigError, load_config
from services.common.server import Service, run_service

C = TypeVar("C")


def service_main(prog: str, config_cls: type[C], build: Callable[[C], Service], **defaults: Any) -> int:
    """Load `config_cls` from the environment and run the service `build` makes; the exit status."""
    try:
        config = load_config(config_cls, **defaults)
    except ConfigError as exc:
        # Logging is not configured yet and a bad value must be obvious to whoever reads the pod log.
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        service = build(config)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_service(service, config.server)  # type: ignore[attr-defined]
