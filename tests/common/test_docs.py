"""The README stays true to the code: every configuration variable is documented as declared."""

from __future__ import annotations

from crossmodal.cli.config_table import config_rows, replace_table
from tests.support import ROOT


def test_readme_configuration_table_matches_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    assert replace_table(readme) == readme, "run `crossmodal config-table --update README.md`"


def test_every_variable_is_unique_and_explained() -> None:
    rows = config_rows()
    names = [r[0] for r in rows]
    assert len(names) == len(set(names))
    assert all(name.startswith("CROSSMODAL_") and meaning for name, _, _, meaning in rows)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]
