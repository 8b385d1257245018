"""Print, check or rewrite the README's Markdown table of every CROSSMODAL_* environment variable.

The table is generated from the services' typed config classes, so it lives beside the services rather
than in the SDK (which must install and run without them). Run it with the project's interpreter from
anywhere: `.venv/bin/python scripts/config_table.py [--update README.md | --check README.md]`.

Settings that every service reads alike (the server's `ServerConfig` and the contract's `Limits`, nested
in each service's config) are listed once, under "all services"; every other variable appears once,
under the first section that declares it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.common.config import default_repr, settings_of  # noqa: E402

SHARED = "all services"
# (section title, module, config class name), in the order of the README table.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    (SHARED, "services.common.config", "ServerConfig"),
    (SHARED, "services.common.limits", "Limits"),
    ("encoders", "services.encoder.config", "EncoderServiceConfig"),
    ("index", "services.index.config", "IndexConfig"),
    ("gateway", "services.gateway.config", "GatewayConfig"),
    ("http", "services.http.config", "HttpConfig"),
)
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def config_classes() -> list[tuple[str, type]]:
    """(section title, config class) of every section; a class that moved or is not a dataclass is an error."""
    out: list[tuple[str, type]] = []
    for title, module, name in SECTIONS:
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{module}.{name} is not a config dataclass")
        out.append((title, cls))
    return out


def config_rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, used by, meaning) for every setting, each variable once."""
    classes = config_classes()
    shared = {spec.env for title, cls in classes if title == SHARED for _, spec in settings_of(cls)}
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for title, cls in classes:
        for field, spec in settings_of(cls):
            # A service's nested ServerConfig or Limits repeats the shared rows: they are listed once.
            if spec.env in seen or (title != SHARED and spec.env in shared):
                continue
            seen.add(spec.env)
            meaning = spec.help
            if spec.choices:
                meaning += f" One of: {', '.join(spec.choices)}."
            rows.append((spec.env, default_repr(field), title, meaning))
    return rows


def render_table() -> str:
    """The configuration table in Markdown."""
    lines = ["| Variable | Default | Used by | Meaning |", "|---|---|---|---|"]
    for env, default, title, meaning in config_rows():
        lines.append(f"| `{env}` | `{default}` | {title} | {meaning.replace('|', '/')} |")
    return "\n".join(lines)


def replace_table(readme: str) -> str:
    """Return `readme` with the text between the config-table markers replaced by the current table."""
    head, found, rest = readme.partition(START)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"README has no {START} ... {END} block")
    return f"{head}{START}\n{render_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Print the table, or rewrite (--update) or verify (--check) the one inside a README's markers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--update", type=Path, metavar="README", help="rewrite the table inside this file's markers")
    action.add_argument("--check", type=Path, metavar="README", help="exit 1 if this file's table is out of date")
    args = parser.parse_args(argv)
    if args.update:
        args.update.write_text(replace_table(args.update.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"updated the configuration table in {args.update}")
    elif args.check:
        text = args.check.read_text(encoding="utf-8")
        if replace_table(text) != text:
            print(f"{args.check}: the configuration table is out of date; run {sys.argv[0]} --update {args.check}")
            return 1
        print(f"{args.check}: the configuration table is current")
    else:
        print(render_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
