"""The README stays true to the code: every configuration variable is documented as declared."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "config_table.py"
LIMITS = [
    "CROSSMODAL_MAX_K",
    "CROSSMODAL_MAX_BATCH",
    "CROSSMODAL_MAX_TEXT_CHARS",
    "CROSSMODAL_MAX_IMAGE_BYTES",
    "CROSSMODAL_MAX_METADATA_BYTES",
]


@pytest.fixture(scope="module")
def config_table() -> ModuleType:
    """scripts/config_table.py, loaded as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("config_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_table_matches_the_code(tmp_path: Path) -> None:
    # Run as the Makefile and a person would: the project's interpreter, from another directory.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", str(ROOT / "README.md")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is current" in result.stdout


def test_check_fails_on_a_stale_table(tmp_path: Path, config_table: ModuleType) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{config_table.START}\n| stale |\n{config_table.END}\nafter\n")
    stale = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", str(readme)], capture_output=True, text=True, timeout=120
    )
    assert stale.returncode == 1 and "out of date" in stale.stdout
    updated = subprocess.run(
        [sys.executable, str(SCRIPT), "--update", str(readme)], capture_output=True, text=True, timeout=120
    )
    assert updated.returncode == 0, updated.stderr
    text = readme.read_text()
    assert "| stale |" not in text and "`CROSSMODAL_PORT`" in text and text.endswith("\nafter\n")


def test_every_variable_is_unique_and_explained(config_table: ModuleType) -> None:
    rows = config_table.config_rows()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert all(name.startswith("CROSSMODAL_") and meaning for name, _, _, meaning in rows)


def test_shared_limits_are_listed_once_for_all_services(config_table: ModuleType) -> None:
    used_by = {name: title for name, _, title, _ in config_table.config_rows()}
    assert {name: used_by.get(name) for name in LIMITS} == dict.fromkeys(LIMITS, "all services")
    assert used_by["CROSSMODAL_PORT"] == "all services"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]
