"""The SDK and the CLI install and run without the services package: no import of theirs reaches it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from crossmodal.cli import COMMAND_MODULES

SDK_MODULES = ("crossmodal", "crossmodal.client", "crossmodal.transport", "crossmodal.cluster", "crossmodal.cli")

# Runs first in the child: any import of `services` (or a submodule) fails, as where it is not installed.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class NoServices(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "services" or name.startswith("services."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: the SDK must not need it)")
            return None

    sys.meta_path.insert(0, NoServices())
    try:
        import services
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the blocker let `services` through")
    """
)


def _run_without_services(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_sdk_and_cli_modules_import_without_services(tmp_path: Path) -> None:
    modules = [*SDK_MODULES, *COMMAND_MODULES, "crossmodal.cli._common"]
    result = _run_without_services(
        f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        from crossmodal.cli import build_parser
        build_parser()
        print("imported", len({modules!r}), "modules;", sorted(m for m in sys.modules if m.split(".")[0] == "services"))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imported {len(modules)} modules; []"


def test_search_and_ingest_help_run_without_services(tmp_path: Path) -> None:
    for command in ("search", "ingest", "stats"):
        result = _run_without_services(
            f"""
            from crossmodal.cli import main
            main([{command!r}, "--help"])
            """,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: crossmodal {command}"), result.stdout
        assert "--address" in result.stdout
