"""`crossmodal config-table`: print the Markdown table of every CROSSMODAL_* variable (for the README)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path
from typing import Any

from services.common.config import ServerConfig, default_repr, settings_of

# (section title, module, config class name); the order of the README table.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("all services", "services.common.config", "ServerConfig"),
    ("encoders", "services.encoder_text.config", "EncoderTextConfig"),
    ("encoders", "services.encoder_image.config", "EncoderImageConfig"),
    ("index", "services.index.config", "IndexConfig"),
    ("gateway", "services.gateway.config", "GatewayConfig"),
)


def _config_classes() -> list[tuple[str, type]]:
    out: list[tuple[str, type]] = []
    for title, module, name in SECTIONS:
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            out.append((title, cls))
    return out


def config_rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, used by, meaning) for every setting, each variable once."""
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    shared = {spec.env for _, spec in settings_of(ServerConfig)}
    for title, cls in _config_classes():
        for field, spec in settings_of(cls):
            if spec.env in seen or (title != "all services" and spec.env in shared):
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


START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def replace_table(readme: str) -> str:
    """Return `readme` with the text between the config-table markers replaced by the current table."""
    head, found, rest = readme.partition(START)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"README has no {START} ... {END} block")
    return f"{head}{START}\n{render_table()}\n{END}{tail}"


def _handler(args: Any) -> int:
    if args.update:
        path = Path(args.update)
        path.write_text(replace_table(path.read_text()))
        print(f"updated the configuration table in {path}")
    else:
        print(render_table())
    return 0


def register(subparsers: Any) -> None:
    """Add the `config-table` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config-table", help="print the Markdown table of every CROSSMODAL_* environment variable"
    )
    parser.add_argument("--update", metavar="README", help="rewrite the table inside this file's markers")
    parser.set_defaults(func=_handler)
