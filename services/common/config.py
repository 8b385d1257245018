"""Typed configuration from CROSSMODAL_* environment variables, checked once at start.

Each service declares a frozen dataclass whose fields are made with `setting(...)`. `load_config`
reads the environment, converts each value to the field's type, checks its bounds and raises
`ConfigError` naming the variable when a value is wrong. The same declarations feed the README's
configuration table (`scripts/config_table.py`), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "CROSSMODAL_"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class SettingSpec:
    """How one field is read from the environment."""

    env: str
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None


def setting(
    env: str,
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """Declare a dataclass field read from the environment variable CROSSMODAL_<env>."""
    spec = SettingSpec(ENV_PREFIX + env, help, min, max, tuple(choices) if choices else None)
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"setting": spec})


def _field_type(cls: type, field: dataclasses.Field[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[field.name]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(raw: str, tp: Any, spec: SettingSpec) -> Any:
    tp, optional = _unwrap_optional(tp)
    if optional and raw.strip() == "":
        return None
    if tp is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{spec.env}: expected a boolean (true/false/1/0), got {raw!r}")
    if tp is int:
        try:
            value: Any = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{spec.env}: expected an integer, got {raw!r}") from None
    elif tp is float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{spec.env}: expected a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{spec.env}: expected a finite number, got {raw!r}")
    elif tp is str:
        value = raw
    elif tp is Path:
        if not raw.strip():
            raise ConfigError(f"{spec.env}: expected a path, got an empty value")
        value = Path(raw.strip())
    elif typing.get_origin(tp) is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        value = tuple(_convert(p, item_tp, spec) for p in parts)
    else:
        raise TypeError(f"{spec.env}: unsupported setting type {tp!r}")
    _check(value, spec)
    return value


def _check(value: Any, spec: SettingSpec) -> None:
    if isinstance(value, tuple):
        for item in value:
            _check(item, spec)
        return
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{spec.env}: expected one of {', '.join(spec.choices)}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            raise ConfigError(f"{spec.env}: must be >= {spec.min:g}, got {value}")
        if spec.max is not None and value > spec.max:
            raise ConfigError(f"{spec.env}: must be <= {spec.max:g}, got {value}")


def settings_of(cls: type) -> list[tuple[dataclasses.Field[Any], SettingSpec]]:
    """List the environment-backed fields of a config class, nested classes included."""
    out: list[tuple[dataclasses.Field[Any], SettingSpec]] = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get("setting")
        if spec is not None:
            out.append((field, spec))
        else:
            sub = _field_type(cls, field)
            if dataclasses.is_dataclass(sub):
                out.extend(settings_of(sub))  # type: ignore[arg-type]
    return out


def load_config(cls: type[T], environ: Mapping[str, str] | None = None, **defaults: Any) -> T:
    """Build `cls` from the environment; `defaults` override field defaults (e.g. a service's port)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = _field_type(cls, field)
        spec = field.metadata.get("setting")
        if spec is None:
            if dataclasses.is_dataclass(tp):
                values[field.name] = load_config(tp, env, **defaults)  # type: ignore[arg-type]
            continue
        if spec.env in env:
            values[field.name] = _convert(env[spec.env], tp, spec)
        elif field.name in defaults:
            values[field.name] = defaults[field.name]
    return cls(**values)


def default_repr(field: dataclasses.Field[Any]) -> str:
    """Render a field's default for documentation."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(unset)"
    return str(value)


# --- settings every service shares --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """TLS material for a server or for the channels a service opens to others."""

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured at all."""
        return self.cert_file is not None or self.ca_file is not None


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Settings of the gRPC server, metrics endpoint, logging and shutdown, shared by every service."""

    host: str = setting("HOST", "0.0.0.0", "Address the gRPC server binds to.")
    port: int = setting(
        "PORT", 50051, "gRPC port (0 picks a free port; each service has its own default).", min=0, max=65535
    )
    metrics_port: int = setting(
        "METRICS_PORT",
        9090,
        "Port of the Prometheus /metrics HTTP endpoint (0 picks a free port; -1 disables it).",
        min=-1,
        max=65535,
    )
    log_level: str = setting("LOG_LEVEL", "info", "Minimum log level.", choices=("debug", "info", "warning", "error"))
    log_format: str = setting(
        "LOG_FORMAT",
        "auto",
        "Log format: JSON lines, console, or auto (console on a terminal, JSON otherwise).",
        choices=("auto", "json", "console"),
    )
    rpc_log_slow_ms: float = setting(
        "RPC_LOG_SLOW_MS",
        1000.0,
        "Successful RPCs slower than this get an info log line; faster ones are logged at debug, failures at warning.",
        min=0,
    )
    grace_seconds: float = setting(
        "GRACE_SECONDS", 10.0, "On SIGTERM, how long in-flight calls may run before the server stops.", min=0, max=3600
    )
    max_message_bytes: int = setting(
        "MAX_MESSAGE_BYTES",
        64 * 1024 * 1024,
        "Largest gRPC message accepted or sent, in bytes.",
        min=1024,
        max=2**31 - 1,
    )
    max_concurrent_rpcs: int = setting(
        "MAX_CONCURRENT_RPCS",
        0,
        "Upper bound on RPCs served at once; more get RESOURCE_EXHAUSTED (0: unbounded).",
        min=0,
    )
    tls_cert_file: Path | None = setting("TLS_CERT_FILE", None, "Server certificate (PEM); enables TLS.")
    tls_key_file: Path | None = setting("TLS_KEY_FILE", None, "Server private key (PEM).")
    tls_client_ca_file: Path | None = setting(
        "TLS_CLIENT_CA_FILE", None, "CA bundle (PEM) that client certificates must chain to; enables mutual TLS."
    )
    client_tls_ca_file: Path | None = setting(
        "CLIENT_TLS_CA_FILE",
        None,
        "CA bundle (PEM) to verify the services this one calls; enables TLS on its channels.",
    )
    client_tls_cert_file: Path | None = setting(
        "CLIENT_TLS_CERT_FILE", None, "Client certificate (PEM) presented to the services this one calls (mutual TLS)."
    )
    client_tls_key_file: Path | None = setting("CLIENT_TLS_KEY_FILE", None, "Client private key (PEM).")
    ready_file: Path | None = setting(
        "READY_FILE",
        None,
        'Where to write {"port", "metrics_port", "pid"} as JSON once the service is SERVING (used by `crossmodal up`).',
    )
    fault_delay_ms: int = setting(
        "FAULT_DELAY_MS",
        0,
        "Test only: delay every call of the methods in CROSSMODAL_FAULT_METHODS by this many milliseconds.",
        min=0,
        max=600_000,
    )
    fault_methods: tuple[str, ...] = setting(
        "FAULT_METHODS",
        (),
        "Test only: comma-separated method names (e.g. SearchShard) that CROSSMODAL_FAULT_DELAY_MS slows.",
    )

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("CROSSMODAL_TLS_CERT_FILE and CROSSMODAL_TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError(
                "CROSSMODAL_TLS_CLIENT_CA_FILE (mutual TLS) needs CROSSMODAL_TLS_CERT_FILE and CROSSMODAL_TLS_KEY_FILE"
            )
        if (self.client_tls_cert_file is None) != (self.client_tls_key_file is None):
            raise ConfigError("CROSSMODAL_CLIENT_TLS_CERT_FILE and CROSSMODAL_CLIENT_TLS_KEY_FILE must be set together")
        for name in (
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
            "client_tls_ca_file",
            "client_tls_cert_file",
            "client_tls_key_file",
        ):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"CROSSMODAL_{name.upper()}: no such file: {path}")

    @property
    def server_tls(self) -> TLSConfig | None:
        """TLS settings of this service's own server, or None for plaintext."""
        if self.tls_cert_file is None:
            return None
        return TLSConfig(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def client_tls(self) -> TLSConfig | None:
        """TLS settings of the channels this service opens, or None for plaintext."""
        if self.client_tls_ca_file is None and self.client_tls_cert_file is None:
            return None
        return TLSConfig(self.client_tls_cert_file, self.client_tls_key_file, self.client_tls_ca_file)
