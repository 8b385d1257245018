"""Unit tests of typed configuration parsing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.common.config import ConfigError, ServerConfig, load_config, setting, settings_of


@dataclasses.dataclass(frozen=True)
class Sample:
    workers: int = setting("TEST_WORKERS", 4, "workers", min=1, max=64)
    ratio: float = setting("TEST_RATIO", 0.5, "ratio", min=0, max=1)
    enabled: bool = setting("TEST_ENABLED", False, "enabled")
    mode: str = setting("TEST_MODE", "fast", "mode", choices=("fast", "exact"))
    names: tuple[str, ...] = setting("TEST_NAMES", ("a",), "names")
    shards: tuple[int, ...] = setting("TEST_SHARDS", (0,), "shards", min=0)
    path: Path | None = setting("TEST_PATH", None, "path")


def test_defaults_apply_without_environment() -> None:
    cfg = load_config(Sample, {})
    assert cfg == Sample()


def test_values_are_converted_to_the_declared_types() -> None:
    cfg = load_config(
        Sample,
        {
            "CROSSMODAL_TEST_WORKERS": " 8 ",
            "CROSSMODAL_TEST_RATIO": "0.25",
            "CROSSMODAL_TEST_ENABLED": "yes",
            "CROSSMODAL_TEST_MODE": "exact",
            "CROSSMODAL_TEST_NAMES": "x, y,,z",
            "CROSSMODAL_TEST_SHARDS": "0,3",
            "CROSSMODAL_TEST_PATH": "/tmp/x",
        },
    )
    assert (cfg.workers, cfg.ratio, cfg.enabled, cfg.mode) == (8, 0.25, True, "exact")
    assert cfg.names == ("x", "y", "z") and cfg.shards == (0, 3) and cfg.path == Path("/tmp/x")


def test_empty_value_unsets_an_optional() -> None:
    assert load_config(Sample, {"CROSSMODAL_TEST_PATH": ""}).path is None


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("CROSSMODAL_TEST_WORKERS", "many", "expected an integer"),
        ("CROSSMODAL_TEST_WORKERS", "0", "must be >= 1"),
        ("CROSSMODAL_TEST_WORKERS", "65", "must be <= 64"),
        ("CROSSMODAL_TEST_RATIO", "nan", "finite number"),
        ("CROSSMODAL_TEST_RATIO", "1.5", "must be <= 1"),
        ("CROSSMODAL_TEST_ENABLED", "maybe", "expected a boolean"),
        ("CROSSMODAL_TEST_MODE", "slow", "expected one of fast, exact"),
        ("CROSSMODAL_TEST_SHARDS", "0,-1", "must be >= 0"),
    ],
)
def test_bad_values_name_the_variable(env: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Sample, {env: value})
    assert str(info.value).startswith(env + ":")
    assert fragment in str(info.value)


def test_service_defaults_override_field_defaults_but_not_the_environment() -> None:
    assert load_config(ServerConfig, {}, port=50099).port == 50099
    assert load_config(ServerConfig, {"CROSSMODAL_PORT": "7"}, port=50099).port == 7


def test_tls_files_must_come_in_pairs_and_exist(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="CROSSMODAL_TLS_CERT_FILE and CROSSMODAL_TLS_KEY_FILE"):
        load_config(ServerConfig, {"CROSSMODAL_TLS_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="CROSSMODAL_TLS_KEY_FILE: no such file"):
        load_config(
            ServerConfig,
            {"CROSSMODAL_TLS_CERT_FILE": str(cert), "CROSSMODAL_TLS_KEY_FILE": str(tmp_path / "missing.pem")},
        )
    with pytest.raises(ConfigError, match="mutual TLS"):
        load_config(ServerConfig, {"CROSSMODAL_TLS_CLIENT_CA_FILE": str(cert)})


def test_every_setting_has_a_prefixed_unique_name_and_help() -> None:
    names = [spec.env for _, spec in settings_of(ServerConfig)]
    assert len(names) == len(set(names))
    assert all(n.startswith("CROSSMODAL_") and n.upper() == n for n in names)
    assert all(spec.help for _, spec in settings_of(ServerConfig))
