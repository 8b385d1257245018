"""Options and helpers shared by the CLI commands that talk to a gateway."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from crossmodal.client import Client, Hit, build_filter
from crossmodal.v1 import types_pb2

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """--address, --api-key and TLS options, with environment defaults."""
    parser.add_argument(
        "--address",
        default=os.environ.get("CROSSMODAL_ADDRESS", "127.0.0.1:50051"),
        help="gateway host:port (env CROSSMODAL_ADDRESS; default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CROSSMODAL_API_KEY"),
        help="API key sent as `authorization: Bearer` (env CROSSMODAL_API_KEY)",
    )
    parser.add_argument("--ca", type=Path, help="CA bundle (PEM) to verify the gateway; enables TLS")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key", type=Path, help="client private key (PEM) for mutual TLS")


def connect(args: argparse.Namespace) -> Client:
    """A client from the connection options."""
    read = lambda p: p.read_bytes() if p else None  # noqa: E731
    return Client(
        args.address,
        api_key=args.api_key,
        root_certificates=read(args.ca),
        client_cert=read(args.cert),
        client_key=read(args.key),
    )


def parse_filter(specs: Sequence[str]) -> types_pb2.Filter | None:
    """Filters from `key=value`, `key=v1|v2` (membership) and `tag:name` strings."""
    if not specs:
        return None
    equals: dict[str, list[str]] = {}
    tags: list[str] = []
    for spec in specs:
        if spec.startswith("tag:"):
            tags.append(spec[4:])
            continue
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise SystemExit(f"bad --filter {spec!r}: use key=value, key=v1|v2 or tag:name")
        equals.setdefault(key, []).extend(value.split("|"))
    return build_filter(equals, tags_all=tags)


def hits_table(hits: Sequence[Hit]) -> str:
    """A plain-text table of hits."""
    rows = [("#", "score", "modality", "id", "text / path")]
    for n, hit in enumerate(hits, 1):
        label = hit.metadata.get("text") or hit.metadata.get("path", "")
        rows.append((str(n), f"{hit.score:.4f}", hit.modality, hit.id, label[:70]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def hits_json(hits: Sequence[Hit], partial: Sequence[int]) -> str:
    """The hits as JSON."""
    return json.dumps({"hits": [h.__dict__ for h in hits], "partial_shards": list(partial)}, indent=2)


def _thumbnail(path: str, size: int = 160) -> str | None:
    try:
        from PIL import Image

        with Image.open(path) as opened:
            img = opened.convert("RGB")
        img.thumbnail((size, size))
        buffer = io.BytesIO()
        img.save(buffer, "PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    except (OSError, ValueError):
        return None


def write_html(path: Path, sections: Sequence[tuple[str, Sequence[Hit], str | None]]) -> None:
    """A self-contained results page: per query, its hits with thumbnails (images) or texts."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>crossmodal results</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;width:180px;margin:6px;"
        "vertical-align:top;font-size:12px}img{border:1px solid #ccc}.q{margin-top:2em}</style>",
        "<h1>crossmodal results</h1>",
    ]
    for title, hits, query_image in sections:
        parts.append(f"<div class='q'><h2>{html.escape(title)}</h2>")
        if query_image:
            thumb = _thumbnail(query_image)
            if thumb:
                parts.append(f"<p>query image:<br><img src='{thumb}' alt='query'></p>")
        for n, hit in enumerate(hits, 1):
            caption = f"#{n} {html.escape(hit.id)}<br>score {hit.score:.4f} ({hit.modality})"
            thumb = _thumbnail(hit.metadata["path"]) if hit.modality == "image" and "path" in hit.metadata else None
            body = (
                f"<img src='{thumb}' alt='{html.escape(hit.id)}'>"
                if thumb
                else f"<blockquote>{html.escape(hit.metadata.get('text', ''))}</blockquote>"
            )
            parts.append(f"<figure class='hit'>{body}<figcaption>{caption}</figcaption></figure>")
        parts.append("</div>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
