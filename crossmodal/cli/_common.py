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

from PIL import Image

from crossmodal.client import Client, Hit, build_filter
from crossmodal.v1 import types_pb2
from crossmodal.video.sampling import VIDEO_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"})
__all__ = ["AUDIO_SUFFIXES", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]


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


def clock(seconds: float) -> str:
    """Seconds as mm:ss (h:mm:ss from an hour on), as a video player shows them."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def is_moment(hit: Hit) -> bool:
    """Whether a hit is a span of a video or a sound (target video or audio), not a whole item."""
    return hit.modality in ("video", "audio") and hit.end > 0


def moments_table(hits: Sequence[Hit]) -> str:
    """One line per moment of a video or sound: `video.mp4  00:12-00:18  0.81`."""
    width = max((len(h.id) for h in hits), default=0)
    return "\n".join(f"{h.id.ljust(width)}  {clock(h.start)}-{clock(h.end)}  {h.score:.2f}" for h in hits)


def hits_table(hits: Sequence[Hit]) -> str:
    """A plain-text table of hits (of moments, when every hit is a moment of a video or sound)."""
    if hits and all(is_moment(h) for h in hits):
        return moments_table(hits)
    rows = [("#", "score", "modality", "id", "text / path")]
    for n, hit in enumerate(hits, 1):
        label = hit.metadata.get("text") or hit.metadata.get("path", "")
        rows.append((str(n), f"{hit.score:.4f}", hit.modality, hit.id, label[:70]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def hits_json(hits: Sequence[Hit], partial: Sequence[int]) -> str:
    """The hits as JSON; a moment has `id` (the video or sound), `start`, `end` and `best` (seconds), `score`."""
    out = []
    for h in hits:
        if is_moment(h):
            out.append(
                {"id": h.id, "start": h.start, "end": h.end, "score": h.score, "best": h.best, "metadata": h.metadata}
            )
        else:
            out.append({k: v for k, v in h.__dict__.items() if k not in ("start", "end", "best")})
    return json.dumps({"hits": out, "partial_shards": list(partial)}, indent=2)


def _data_url(img: Image.Image) -> str:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _thumbnail(path: str, size: int = 160) -> str | None:
    try:
        with Image.open(path) as opened:
            img = opened.convert("RGB")
        img.thumbnail((size, size))
        return _data_url(img)
    except (OSError, ValueError):
        return None


def _media_source(path: str, hit: Hit) -> str:
    """The file's URL, with a media fragment (`#t=start,end`) that makes a player play the moment."""
    fragment = f"#t={hit.start:.3f},{hit.end:.3f}" if is_moment(hit) else ""
    return html.escape(Path(path).as_uri() + fragment, quote=True)


def _moment_html(hit: Hit, n: int) -> str:
    """A moment: its best frame as the poster of an HTML5 player that plays the span (a media fragment); a
    sound's in an audio player."""
    caption = (
        f"#{n} {html.escape(hit.id)}<br>{clock(hit.start)}-{clock(hit.end)} (best {clock(hit.best)}), "
        f"score {hit.score:.4f}"
    )
    path = hit.metadata.get("path")
    if not path:
        return f"<figure class='hit'><figcaption>{caption}</figcaption></figure>"
    if hit.modality == "audio":
        return _audio_html(path, hit, caption)
    from crossmodal.video import thumbnail_at

    frame = thumbnail_at(path, hit.best)
    poster = f" poster='{_data_url(frame)}'" if frame is not None else ""
    return (
        f"<figure class='hit moment'><video controls preload='metadata' width='240'{poster} "
        f"src='{_media_source(path, hit)}'></video><figcaption>{caption}</figcaption></figure>"
    )


def _audio_html(path: str, hit: Hit, caption: str) -> str:
    """A sound: an audio player that plays its moment (or the whole sound)."""
    return (
        f"<figure class='hit moment'><audio controls preload='metadata' src='{_media_source(path, hit)}'>"
        f"</audio><figcaption>{caption}</figcaption></figure>"
    )


def write_html(path: Path, sections: Sequence[tuple[str, Sequence[Hit], str | None]]) -> None:
    """A self-contained results page: per query (an image or sound file shown as the query), its hits with
    thumbnails (images), players (video and sound moments, sounds) or texts."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>crossmodal results</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;width:180px;margin:6px;"
        "vertical-align:top;font-size:12px}figure.moment{width:250px}"
        "img{border:1px solid #ccc}.q{margin-top:2em}</style>",
        "<h1>crossmodal results</h1>",
    ]
    for title, hits, query_image in sections:
        parts.append(f"<div class='q'><h2>{html.escape(title)}</h2>")
        if query_image and Path(query_image).suffix.lower() in AUDIO_SUFFIXES:
            source = html.escape(Path(query_image).resolve().as_uri(), quote=True)
            parts.append(f"<p>query sound:<br><audio controls src='{source}'></audio></p>")
        elif query_image:
            thumb = _thumbnail(query_image)
            if thumb:
                parts.append(f"<p>query image:<br><img src='{thumb}' alt='query'></p>")
        for n, hit in enumerate(hits, 1):
            if is_moment(hit):
                parts.append(_moment_html(hit, n))
                continue
            if hit.modality == "audio" and "path" in hit.metadata:
                caption = f"#{n} {html.escape(hit.id)}<br>score {hit.score:.4f} (audio)"
                parts.append(_audio_html(hit.metadata["path"], hit, caption))
                continue
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
