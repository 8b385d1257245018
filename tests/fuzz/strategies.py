"""Hypothesis strategies of hostile inputs: odd texts and ids, bad vectors, metadata, filters and images."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from crossmodal.v1 import types_pb2

MAX_ID_BYTES = 256
MAX_TAGS = 64
MAX_METADATA_BYTES = 4096
MAX_TEXT_CHARS = 2048
MAX_K = 1000
MAX_BATCH = 1000
MAX_IMAGE_PIXELS = 50_000_000
NEGATIVE = -1  # a marker in k strategies: the test writes a negative varint by hand

# Characters that break naive text handling: combining marks, bidi controls, zero-width, emoji
# sequences, NUL and other controls, non-characters, the replacement character, odd whitespace.
ODD_PIECES = [
    "\u0301",
    "e\u0301\u0302\u0303",
    "\u202e",
    "\u200f",
    "\u061c",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\u05e2\u05d1\u05e8\u05d9\u05ea",
    "\u200b",
    "\u200c",
    "\u200d",
    "\ufeff",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f1fa\U0001f1f8",
    "\U0001f600",
    "\x00",
    "\x07\x1b[31m",
    "\r\n",
    "\t",
    "\u2028",
    "\u00a0",
    "\u3000",
    "\uffff",
    "\U0010ffff",
    "\ufffd",
    "\u4e2d\u6587",
    "\U00020000",
    "%s%n{0}",
    "'; DROP TABLE items;--",
    "<script>",
    "../../etc/passwd",
    "a",
    " ",
    "red circle",
]
ODD_IDS = [
    "",
    " ",
    "\x00",
    "/",
    "../..",
    "a" * MAX_ID_BYTES,
    "a" * (MAX_ID_BYTES + 1),
    "\u00e9" * (MAX_ID_BYTES // 2),
    "\u00e9" * (MAX_ID_BYTES // 2 + 1),
    "\U0001f600" * (MAX_ID_BYTES // 4),
    "\U0001f600" * (MAX_ID_BYTES // 4 + 1),
    "id with spaces",
    "id\nnewline",
    "\u202eevil",
    "x" * 10_000,
    "%",
    "*",
    "?",
    "'",
    '"',
    "\\",
    "#caption",
]


def odd_text(max_pieces: int = 12) -> st.SearchStrategy[str]:
    """Short texts of odd unicode: random characters mixed with the pieces above."""
    return st.one_of(
        st.text(max_size=40),
        st.lists(st.sampled_from(ODD_PIECES), max_size=max_pieces).map("".join),
        st.lists(st.one_of(st.sampled_from(ODD_PIECES), st.text(max_size=4)), max_size=max_pieces).map("".join),
    )


def sized_text(limit: int) -> st.SearchStrategy[str]:
    """Texts at, just over and far over a character limit, of one- to four-byte characters."""
    lengths = st.one_of(st.integers(limit - 2, limit + 2), st.sampled_from([limit * 10, 100_000, 1_000_000]))
    return st.builds(lambda n, ch: (ch * n)[:n], lengths, st.sampled_from(["a", "\u00e9", "\u4e2d", "\U0001f600", " "]))


def texts(limit: int = MAX_TEXT_CHARS) -> st.SearchStrategy[str]:
    """Any text a client might send: odd unicode or sized at the limit."""
    return st.one_of(odd_text(), odd_text(), sized_text(limit))


def text_ok(text: str, limit: int = MAX_TEXT_CHARS) -> bool:
    """Whether the services document `text` as accepted."""
    return bool(text.strip()) and len(text) <= limit


def ids() -> st.SearchStrategy[str]:
    """Ids: odd characters, empty, at and over 256 bytes."""
    return st.one_of(st.sampled_from(ODD_IDS), st.text(max_size=20), odd_text(4)).filter(
        lambda i: not i.startswith("known-")
    )


def id_ok(item_id: str) -> bool:
    """Whether an id is documented as valid (1-256 bytes of UTF-8)."""
    return 0 < len(item_id.encode("utf-8")) <= MAX_ID_BYTES


def short_strings() -> st.SearchStrategy[str]:
    """Keys, values and tags: empty, one byte, odd characters, at and over the byte limits."""
    return st.one_of(
        st.just(""),
        st.text(min_size=1, max_size=1),
        odd_text(3),
        st.builds(lambda n, ch: ch * n, st.sampled_from([127, 128, 129, 1023, 1024, 1025, 4096, 4097]), st.just("k")),
    )


def metadata() -> st.SearchStrategy[dict[str, str]]:
    """Metadata maps of every size and character."""
    return st.one_of(
        st.dictionaries(short_strings(), short_strings(), max_size=4),
        st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        st.builds(lambda n: {f"k{i}": "v" * 10 for i in range(n)}, st.integers(300, 400)),
    )


def tags() -> st.SearchStrategy[list[str]]:
    """Tag lists: empty tags, odd characters, 64 and 65 tags."""
    return st.one_of(
        st.lists(short_strings(), max_size=4),
        st.builds(lambda n: [f"t{i}" for i in range(n)], st.sampled_from([63, 64, 65, 200])),
    )


def metadata_size(meta: dict[str, str], tag_list: list[str]) -> int:
    """Bytes of metadata keys, values and tags, as the limits count them."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items()) + sum(len(t.encode()) for t in tag_list)


def metadata_ok(meta: dict[str, str], tag_list: list[str]) -> bool:
    """Whether metadata and tags are within the documented limits (no empty key or tag)."""
    return (
        "" not in meta
        and "" not in tag_list
        and len(tag_list) <= MAX_TAGS
        and metadata_size(meta, tag_list) <= MAX_METADATA_BYTES
    )


FLOATS = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, float("nan"), float("inf"), float("-inf")]),
)


def _inject(dim: int, seed: int, length: int, changes: list[tuple[int, float]]) -> list[float]:
    values = np.random.default_rng(seed).standard_normal(length).astype(np.float32).tolist()
    for position, value in changes:
        if values:
            values[position % len(values)] = value
    return values


def vectors(dim: int) -> st.SearchStrategy[list[float]]:
    """Vectors: the right dimension or not, empty, NaN/Inf, zero, subnormal and huge values, valid ones."""
    seeds = st.integers(0, 2**32 - 1)
    lengths = st.one_of(st.just(dim), st.just(dim), st.sampled_from([0, 1, dim - 1, dim + 1, 2 * dim]))
    changes = st.lists(st.tuples(st.integers(0, 2 * dim), FLOATS), max_size=8)
    return st.one_of(
        st.builds(lambda seed: _inject(dim, seed, dim, []), seeds),
        st.builds(lambda seed, n, c: _inject(dim, seed, n, c), seeds, lengths, changes),
        st.builds(lambda v, n: [v] * n, FLOATS, st.sampled_from([dim, dim - 1, dim + 1, 1, 0])),
        st.builds(lambda i, v: [v if j == i else 0.0 for j in range(dim)], st.integers(0, dim - 1), FLOATS),
        st.builds(lambda n: [0.5] * n, st.sampled_from([dim * 100, 100_000])),
    )


def vector_ok(values: list[float], dim: int) -> bool:
    """Whether a vector is accepted: the dimension, finite, and a length that float32 can normalise."""
    if len(values) != dim:
        return False
    arr = np.asarray(values, dtype=np.float32)
    if not np.isfinite(arr).all():
        return False
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        unit = arr / np.linalg.norm(arr, axis=-1, keepdims=True)
        unit_norm = float(np.linalg.norm(unit.astype(np.float64)))
    return abs(unit_norm - 1.0) < 1e-3


def k_values(limit: int = MAX_K) -> st.SearchStrategy[int]:
    """K: 0, in range, just over, huge, 2^32-1 and a negative marker."""
    return st.one_of(
        st.just(0),
        st.integers(1, 20),
        st.integers(1, limit),
        st.sampled_from([limit, limit + 1, 2**31, 2**32 - 1, NEGATIVE, -5, -(2**31)]),
    )


MODALITIES = st.sampled_from([0, 1, 2, 3, 4, 5, -1, 2**31 - 1, -(2**31)])


def modality_ok(value: int, allow_unspecified: bool) -> bool:
    """Whether a modality number is a known one."""
    return value in (1, 2, 3, 4) or (allow_unspecified and value == 0)


def filters() -> st.SearchStrategy[types_pb2.Filter]:
    """Filters within and over every limit."""
    clause = st.builds(
        lambda key, values: types_pb2.FilterClause(key=key, any_of=values),
        short_strings(),
        st.one_of(st.lists(short_strings(), max_size=3), st.builds(lambda n: ["v"] * n, st.sampled_from([64, 65]))),
    )
    return st.one_of(
        st.just(types_pb2.Filter()),
        st.builds(
            lambda clauses, tags_all, tags_any: types_pb2.Filter(clauses=clauses, tags_all=tags_all, tags_any=tags_any),
            st.one_of(
                st.lists(clause, max_size=3),
                st.builds(lambda n: [clause_n(i) for i in range(n)], st.sampled_from([16, 17])),
            ),
            st.one_of(
                st.lists(short_strings(), max_size=3),
                st.builds(lambda n: [f"t{i}" for i in range(n)], st.sampled_from([16, 17])),
            ),
            st.one_of(
                st.lists(short_strings(), max_size=3),
                st.builds(lambda n: [f"t{i}" for i in range(n)], st.sampled_from([64, 65])),
            ),
        ),
    )


def clause_n(i: int) -> types_pb2.FilterClause:
    """A valid clause on key k<i>."""
    return types_pb2.FilterClause(key=f"k{i}", any_of=["v"])


def filter_ok(flt: types_pb2.Filter) -> bool:
    """The documented filter limits."""
    for clause in flt.clauses:
        if not 1 <= len(clause.key.encode()) <= 128:
            return False
        if not 1 <= len(clause.any_of) <= 64 or any(len(v.encode()) > 1024 for v in clause.any_of):
            return False
    if len(flt.clauses) > 16 or len(set(flt.tags_all)) > 16 or len(set(flt.tags_any)) > 64:
        return False
    return "" not in flt.tags_all and "" not in flt.tags_any


# --- images --------------------------------------------------------------------------------------


def real_images(seed: int = 5) -> dict[str, bytes]:
    """Small real images in every supported format, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    out: dict[str, bytes] = {}
    for size in ((48, 40), (97, 33)):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(pixels, "RGB")
        for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
            buf = io.BytesIO()
            img.save(buf, format=fmt)
            out[f"{fmt.lower()}-{size[0]}x{size[1]}"] = buf.getvalue()
    rgba = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA")
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    out["png-rgba"] = buf.getvalue()
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int, with_data: bool) -> bytes:
    """A PNG whose header announces width x height, with a tiny (or no) pixel stream."""
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if with_data:
        data += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    return data


def jpeg_header(width: int, height: int, with_data: bool) -> bytes:
    """A baseline JPEG whose SOF0 announces width x height."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    body = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x00\x03\x00\x00\x3f\x00" + b"\x00" * 32
    return b"\xff\xd8" + app0 + sof + (body if with_data else b"") + b"\xff\xd9"


def gif_header(width: int, height: int, with_data: bool) -> bytes:
    """A GIF whose logical screen and first frame announce width x height."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return head + (frame if with_data else b"") + b"\x3b"


def bmp_header(width: int, height: int, with_data: bool) -> bytes:
    """A 24-bit BMP whose info header announces width x height."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54)
    return head + info + (b"\x00" * 16 if with_data else b"")


def webp_header(width: int, height: int, with_data: bool) -> bytes:
    """An extended (VP8X) WebP whose canvas announces width x height (at most 2^24 each)."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    extra = b"VP8 " + struct.pack("<I", 10) + b"\x00" * 10 if with_data else b""
    body = b"WEBP" + vp8x + extra
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_header(width: int, height: int, with_data: bool) -> bytes:
    """A little-endian TIFF whose first IFD announces width x height."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),
        (278, 4, 1, height),
        (279, 4, 1, 16),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + (b"\x00" * 16 if with_data else b"")


HEADER_MAKERS = {
    "png": (png_header, 2**31 - 1),
    "jpeg": (jpeg_header, 65535),
    "gif": (gif_header, 65535),
    "bmp": (bmp_header, 2**31 - 1),
    "webp": (webp_header, 2**24),
    "tiff": (tiff_header, 2**32 - 1),
}


def bomb_headers(min_pixels: int = MAX_IMAGE_PIXELS + 1) -> st.SearchStrategy[tuple[str, int, int, bytes]]:
    """(format, width, height, bytes) of headers announcing at least `min_pixels` pixels."""

    @st.composite
    def build(draw: Any) -> tuple[str, int, int, bytes]:
        fmt = draw(st.sampled_from(sorted(HEADER_MAKERS)))
        maker, limit = HEADER_MAKERS[fmt]
        width = draw(st.one_of(st.just(min(100_000, limit)), st.integers(1, limit)))
        low = -(-min_pixels // width)
        if low > limit:
            width, low = limit, -(-min_pixels // limit)
        height = draw(st.one_of(st.just(max(low, min(100_000, limit))), st.integers(low, limit)))
        return fmt, width, height, maker(width, height, draw(st.booleans()))

    return build()


def small_headers() -> st.SearchStrategy[bytes]:
    """Headers of small images with missing or junk pixel data."""
    return st.builds(
        lambda fmt, w, h, data: HEADER_MAKERS[fmt][0](w, h, data),
        st.sampled_from(sorted(HEADER_MAKERS)),
        st.integers(1, 300),
        st.integers(1, 300),
        st.booleans(),
    )


MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP",
]


def image_bytes(images: dict[str, bytes]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(class, bytes): real, truncated, random, magic + random, junk headers; never a bomb (see bomb_headers)."""
    names = sorted(images)
    real = st.sampled_from(names).map(lambda n: ("real", images[n]))
    truncated = st.builds(
        lambda n, f: ("truncated", images[n][: int(len(images[n]) * f)]), st.sampled_from(names), st.floats(0, 0.999)
    )
    flipped = st.builds(
        lambda n, pos, val: ("corrupt", _flip(images[n], pos, val)),
        st.sampled_from(names),
        st.integers(0, 10**6),
        st.integers(0, 255),
    )
    return st.one_of(
        real,
        truncated,
        flipped,
        st.binary(max_size=512).map(lambda b: ("random", b)),
        st.builds(lambda m, b: ("random", m + b), st.sampled_from(MAGIC), st.binary(max_size=256)),
        small_headers().map(lambda b: ("header", b)),
    )


def _flip(data: bytes, position: int, value: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([value]) + data[position + 1 :]
