"""Thumbnails and media files of stored items, without exposing the filesystem.

A file is served only when (1) a stored item's metadata `path` names it (the caller names an item id,
never a path; the id is looked up with the gateway's Get), (2) its real path, after every symlink is
followed, lies under one of the configured media roots, and (3) it is an image, video or audio file by
its name. Anything else is "not found" with a message that does not reveal where files are. Thumbnails
are made with Pillow off the event loop and kept in a bounded LRU cache keyed by the file's real path,
size and modification time, so a replaced file gets a new thumbnail.
"""

from __future__ import annotations

import collections
import io
import mimetypes
import threading
from pathlib import Path

import grpc
from PIL import Image, ImageOps

from services.http.errors import HttpError

NOT_FOUND = grpc.StatusCode.NOT_FOUND
MEDIA_KINDS = ("image/", "video/", "audio/")
# Pillow's default refuses images above ~179 megapixels only with a warning up to that; a thumbnail of a
# bigger picture is not worth the memory, so such files are refused outright.
MAX_PIXELS = 100_000_000


class MediaLibrary:
    """Resolves items' files under the media roots and makes cached thumbnails of them."""

    def __init__(self, roots: tuple[Path, ...], cache_entries: int) -> None:
        self.roots = tuple(root.resolve() for root in roots)
        self._cache: collections.OrderedDict[tuple[str, int, int, int], bytes] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._lock = threading.Lock()

    def resolve(self, item_id: str, metadata_path: str | None) -> tuple[Path, str]:
        """The real path and content type of the file item `item_id` names, if it may be served."""
        if not self.roots:
            raise HttpError(NOT_FOUND, "this service serves no media files (CROSSMODAL_HTTP_MEDIA_ROOTS is empty)")
        if not metadata_path:
            raise HttpError(NOT_FOUND, f"item {item_id!r} has no stored file (no `path` in its metadata)")
        candidate = Path(metadata_path)
        outside = HttpError(NOT_FOUND, f"item {item_id!r}: its file is not under a media root this service may read")
        if not candidate.is_absolute() or "\x00" in metadata_path:
            raise outside
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise HttpError(NOT_FOUND, f"item {item_id!r}: its file no longer exists") from None
        if not any(real.is_relative_to(root) for root in self.roots) or not real.is_file():
            raise outside
        kind, _ = mimetypes.guess_type(real.name)
        if kind is None or not kind.startswith(MEDIA_KINDS):
            raise HttpError(NOT_FOUND, f"item {item_id!r}: its file is not an image, video or audio file")
        return real, kind

    def thumbnail(self, path: Path, item_id: str, size: int) -> tuple[bytes, bool]:
        """A JPEG of `path` whose longest side is at most `size`, and whether it came from the cache (blocking)."""
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached, True
        data = _make_thumbnail(path, item_id, size)
        if self._cache_entries:
            with self._lock:
                self._cache[key] = data
                while len(self._cache) > self._cache_entries:
                    self._cache.popitem(last=False)
        return data, False


def _make_thumbnail(path: Path, item_id: str, size: int) -> bytes:
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise HttpError(NOT_FOUND, f"item {item_id!r}: its image is too large to make a thumbnail of")
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, far cheaper than full size
            picture = ImageOps.exif_transpose(image).convert("RGB")
            picture.thumbnail((size, size))
            out = io.BytesIO()
            picture.save(out, "JPEG", quality=85)
            return out.getvalue()
    except HttpError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError):
        raise HttpError(NOT_FOUND, f"item {item_id!r}: its file is not an image this service can read") from None
