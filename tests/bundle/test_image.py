"""Image decoding limits and preprocessing parity with open_clip's evaluation transform."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crossmodal.bundle import ImageConfig, ImageInputError, decode_image, preprocess_image
from crossmodal.bundle.image import resized_size

LIMITS = {"max_bytes": 8 << 20, "max_pixels": 20_000_000}


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _noise(rng: np.random.Generator, size: tuple[int, int], channels: int) -> np.ndarray:
    w, h = size
    smooth = rng.integers(0, 256, (max(h // 8, 1), max(w // 8, 1), channels)).astype(np.uint8)
    big = np.asarray(Image.fromarray(smooth.squeeze(-1) if channels == 1 else smooth).resize((w, h)))
    noise = rng.integers(-20, 21, big.shape)
    return np.clip(big.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _sample_images() -> list[tuple[str, Image.Image]]:
    """Images of many sizes, aspect ratios and modes, including decoded files of each format."""
    rng = np.random.default_rng(7)
    out: list[tuple[str, Image.Image]] = []
    for size in [
        (1, 1),
        (2, 3),
        (17, 5),
        (31, 32),
        (64, 64),
        (100, 37),
        (37, 100),
        (224, 224),
        (300, 200),
        (640, 480),
        (480, 640),
        (1000, 120),
        (120, 1000),
        (1023, 767),
    ]:
        out.append((f"RGB {size}", Image.fromarray(_noise(rng, size, 3), "RGB")))
    out.append(("RGBA", Image.fromarray(np.dstack([_noise(rng, (120, 90), 3), _noise(rng, (120, 90), 1)]))))
    out.append(("L", Image.fromarray(_noise(rng, (90, 140), 1))))
    out.append(("LA", Image.fromarray(np.dstack([_noise(rng, (70, 50), 1)] * 2))))
    out.append(("1", Image.fromarray(_noise(rng, (60, 80), 1) > 128)))
    out.append(("P", Image.fromarray(_noise(rng, (150, 100), 3), "RGB").quantize(colors=64)))
    transparent = Image.fromarray(_noise(rng, (50, 70), 3), "RGB").quantize(colors=16)
    transparent.info["transparency"] = 3
    out.append(("P+transparency", transparent))
    out.append(("CMYK", Image.fromarray(_noise(rng, (80, 60), 3), "RGB").convert("CMYK")))
    out.append(("I;16", Image.fromarray(_noise(rng, (64, 48), 1).astype(np.uint16) * 257)))
    out.append(("F", Image.fromarray(_noise(rng, (40, 40), 1).astype(np.float32) / 255.0)))
    base = Image.fromarray(_noise(rng, (160, 120), 3), "RGB")
    for fmt in ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]:
        out.append((f"decoded {fmt}", decode_image(_encode(base, fmt), **LIMITS)))
    sixteen = Image.fromarray(_noise(rng, (90, 60), 1).astype(np.uint16) * 257)
    out.append(("decoded 16-bit PNG", decode_image(_encode(sixteen, "PNG"), **LIMITS)))
    cmyk = Image.fromarray(_noise(rng, (80, 60), 3), "RGB").convert("CMYK")
    out.append(("decoded CMYK JPEG", decode_image(_encode(cmyk, "JPEG"), **LIMITS)))
    return out


CONFIGS = [
    ImageConfig(size=(224, 224)),
    ImageConfig(size=(64, 64), interpolation="bilinear"),
    ImageConfig(size=(32, 48), resize_mode="shortest"),
    ImageConfig(size=(64, 64), resize_mode="longest", fill_color=0),
    ImageConfig(size=(48, 64), resize_mode="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
]


@pytest.fixture(scope="module")
def open_clip_transform() -> object:
    pytest.importorskip("torch")
    from crossmodal.export._torch_compat import import_open_clip

    return import_open_clip().transform.image_transform


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.size}-{c.resize_mode}-{c.interpolation}")
def test_preprocessing_matches_open_clip(cfg: ImageConfig, open_clip_transform: object) -> None:
    transform = open_clip_transform(  # type: ignore[operator]
        cfg.size,
        False,
        mean=cfg.mean,
        std=cfg.std,
        resize_mode=cfg.resize_mode,
        interpolation=cfg.interpolation,
        fill_color=cfg.fill_color,
    )
    worst = {}
    for name, img in _sample_images():
        ours = preprocess_image(img, cfg)
        theirs = transform(img).numpy()
        assert ours.dtype == np.float32 and ours.shape == (3, *cfg.size) == theirs.shape, name
        worst[name] = float(np.abs(ours - theirs).max())
    assert max(worst.values()) <= 1e-2, worst


def test_decode_applies_exif_orientation() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    data = _encode(Image.fromarray(arr, "RGB"), "JPEG", exif=exif.tobytes(), quality=95)
    img = decode_image(data, **LIMITS)
    assert img.size == (20, 40)
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[37, 10]
    assert top[0] > 200 and top[2] < 60  # red moved to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_decode_takes_the_first_gif_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    img = decode_image(buf.getvalue(), **LIMITS)
    assert tuple(np.asarray(img.convert("RGB"))[8, 8]) == (255, 0, 0)


def test_decode_scales_16_bit_images_instead_of_clipping() -> None:
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    img = decode_image(_encode(Image.fromarray(arr), "PNG"), **LIMITS)
    assert img.mode == "L" and int(np.asarray(img)[0, 0]) == 32768 // 257


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_decode_supported_formats(fmt: str) -> None:
    img = decode_image(_encode(Image.new("RGB", (33, 21), (10, 200, 30)), fmt), **LIMITS)
    assert img.size == (33, 21)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` but carries one tiny row of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # 100k x 100k pixels announced in a 33-byte file: refused before any pixel is decoded.
    with pytest.raises(ImageInputError, match="over the limit of 20000000 pixels"):
        decode_image(_png_header_only(100_000, 100_000), **LIMITS)


def test_pixel_limit_is_exact() -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode_image(data, max_bytes=1 << 20, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageInputError, match="10000 pixels, over the limit of 9999"):
        decode_image(data, max_bytes=1 << 20, max_pixels=9_999)


@pytest.mark.parametrize(
    ("data", "limits", "message"),
    [
        (b"", LIMITS, "empty"),
        (b"x" * 101, {"max_bytes": 100, "max_pixels": 10}, "over the limit of 100 bytes"),
        (b"definitely not an image", LIMITS, "not an image in a supported format"),
        (b"%PDF-1.4 not allowed", LIMITS, "not an image in a supported format"),
        (_png_header_only(0, 10), LIMITS, "zero size"),
    ],
    ids=["empty", "too-many-bytes", "garbage", "pdf", "zero-size"],
)
def test_bad_input_is_refused_with_a_reason(data: bytes, limits: dict[str, int], message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        decode_image(data, **limits)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_refused(fmt: str) -> None:
    rng = np.random.default_rng(3)
    data = _encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB"), fmt)
    with pytest.raises(ImageInputError, match="truncated or corrupt|cannot be read"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_image_config_round_trips_and_validates() -> None:
    cfg = ImageConfig(size=(48, 64), resize_mode="longest", interpolation="bilinear", fill_color=3)
    assert ImageConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="resize_mode"):
        ImageConfig(resize_mode="stretch")
    with pytest.raises(ValueError, match="interpolation"):
        ImageConfig(interpolation="lanczos")


# --- scaled decoding of large JPEGs ---------------------------------------------------------------

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "models" / "default"
VIT = ImageConfig(size=(224, 224))
SMALL = ImageConfig(size=(64, 64))


def _photo(seed: int, size: tuple[int, int], orientation: int = 1, mode: str = "RGB") -> bytes:
    """A photo-like JPEG: a smooth colour field, a few shapes, sensor-like noise and an EXIF orientation."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = rng.integers(0, 256, (height // 128 + 2, width // 128 + 2, 3)).astype(np.uint8)
    img = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y, r = (int(v) for v in rng.integers(0, min(size), 3))
        draw.ellipse(
            (x - r // 4, y - r // 4, x + r // 4, y + r // 4), fill=tuple(int(c) for c in rng.integers(0, 256, 3))
        )
    # A marker in the stored top-left corner, so that a wrong rotation shows.
    draw.rectangle((0, 0, width // 4, height // 4), fill=(255, 0, 0))
    pixels = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (height, width, 3), dtype=np.int16)
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(out, "JPEG", quality=92, exif=exif.tobytes())


@pytest.mark.parametrize(
    ("size", "cfg", "decoded"),
    [
        # 224 px input: the resize step makes 298x224, so at least 596x448 is kept: 1/2, not 1/4.
        ((1600, 1200), VIT, (800, 600)),
        ((4032, 3024), VIT, (1008, 756)),
        # 64 px input: 85x64 after the resize, at least 170x128 kept: the smallest scale, 1/8.
        ((1600, 1200), SMALL, (200, 150)),
        # Too small to halve and keep twice the input: decoded in full.
        ((800, 600), VIT, (800, 600)),
        ((255, 255), SMALL, (255, 255)),
        # Portrait, and a panorama whose short side decides.
        ((1200, 1600), VIT, (600, 800)),
        ((3000, 900), VIT, (1500, 450)),
    ],
)
def test_scaled_decode_keeps_at_least_twice_the_resize_steps_size(
    size: tuple[int, int], cfg: ImageConfig, decoded: tuple[int, int]
) -> None:
    data = _photo(1, size)
    img = decode_image(data, **LIMITS, scale_for=cfg)
    assert img.size == decoded
    assert min(img.size) >= 2 * cfg.height or img.size == size
    # The smallest such scale: halving once more would leave less than twice the input.
    assert min(img.size) // 2 < 2 * cfg.height
    assert decode_image(data, **LIMITS).size == size


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_scaled_decode_applies_exif_orientation(orientation: int) -> None:
    data = _photo(2, (1600, 1200), orientation)
    scaled = decode_image(data, **LIMITS, scale_for=VIT)
    full = decode_image(data, **LIMITS)
    assert scaled.size == (full.width // 2, full.height // 2)
    # The same picture the same way up: the full decode halved matches the scaled one closely.
    halved = np.asarray(full.reduce(2), dtype=np.float64)
    assert np.abs(np.asarray(scaled, dtype=np.float64) - halved).mean() < 4.0
    # The red marker of the stored top-left corner is where the orientation puts it.
    corner = {1: (0, 0), 3: (1, 1), 6: (0, 1), 8: (1, 0)}[orientation]
    y = 10 if corner[0] == 0 else scaled.height - 10
    x = 10 if corner[1] == 0 else scaled.width - 10
    r, g, b = np.asarray(scaled)[y, x]
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_scaled_decode_keeps_the_jpeg_colour_mode(mode: str) -> None:
    data = _photo(3, (1600, 1200), 6, mode=mode)
    scaled, full = decode_image(data, **LIMITS, scale_for=VIT), decode_image(data, **LIMITS)
    assert scaled.mode == full.mode == mode
    assert scaled.size == (600, 800)
    a, b = preprocess_image(scaled, VIT), preprocess_image(full, VIT)
    assert np.abs(a - b).mean() < 0.05, np.abs(a - b).mean()


def _large_non_jpegs() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(4)
    size = (1200, 900)
    rgb = Image.fromarray(_noise(rng, size, 3), "RGB")
    alpha = Image.fromarray(np.dstack([_noise(rng, size, 3), _noise(rng, size, 1)]), "RGBA")
    sixteen = Image.fromarray(_noise(rng, size, 1).astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        ("RGBA PNG", _encode(alpha, "PNG")),
        ("16-bit PNG", _encode(sixteen, "PNG")),
        ("palette PNG", _encode(rgb.quantize(colors=64), "PNG")),
        ("rotated WebP", _encode(rgb, "WEBP", exif=exif.tobytes())),
        ("TIFF", _encode(rgb, "TIFF")),
    ]


def _small_files() -> list[tuple[str, bytes]]:
    out = []
    for name, img in _sample_images():
        if img.mode in ("RGB", "L", "CMYK"):
            out.append((f"{name} JPEG", _encode(img, "JPEG", quality=90)))
        lossless = "TIFF" if img.mode in ("CMYK", "F") else "PNG"
        out.append((f"{name} {lossless}", _encode(img, lossless)))
    out.append(("rotated 800x600 JPEG", _photo(5, (800, 600), 8)))
    out.append(("447x447 JPEG", _photo(6, (447, 447), 6)))
    return out


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes, Image.Image]]:
    """Small images of every mode and format, and large non-JPEGs, each with its full decode."""
    return [(name, data, decode_image(data, **LIMITS)) for name, data in _small_files() + _large_non_jpegs()]


@pytest.mark.parametrize("cfg", [VIT, SMALL, *CONFIGS], ids=lambda c: f"{c.size}-{c.resize_mode}")
def test_images_not_scaled_decode_bit_identically(
    cfg: ImageConfig, files: list[tuple[str, bytes, Image.Image]]
) -> None:
    unscaled = []
    for name, data, before in files:
        after = decode_image(data, **LIMITS, scale_for=cfg)
        if after.size != before.size:
            # Only a JPEG with room to spare is reduced, and never below twice the resize step's size.
            assert name.endswith("JPEG"), name
            need = resized_size(before.width, before.height, cfg)
            assert after.width >= 2 * need[0] and after.height >= 2 * need[1], name
            continue
        unscaled.append(name)
        assert after.mode == before.mode, name
        assert np.array_equal(np.asarray(after), np.asarray(before)), name
        if before.mode == "P":
            assert after.getpalette() == before.getpalette(), name
    # Every format other than JPEG, and every small JPEG, went through unchanged.
    assert [n for n, _, _ in files if not n.endswith("JPEG")] == [n for n in unscaled if not n.endswith("JPEG")]
    if cfg in (VIT, SMALL):
        # Less than four times the input on the short side: no scale keeps twice the input.
        assert {f"RGB {size} JPEG" for size in [(1, 1), (64, 64), (224, 224), (300, 200)]} <= set(unscaled)


@pytest.mark.skipif(not (DEFAULT_BUNDLE / "model.json").is_file(), reason="the default bundle is not committed")
def test_scaled_photos_embed_within_cosine_0_995_of_a_full_decode() -> None:
    from crossmodal.bundle import ModelBundle

    bundle = ModelBundle.open(DEFAULT_BUNDLE, towers=("image",), providers=["CPUExecutionProvider"])
    cfg = bundle.image_config
    photos = [
        _photo(10 + i, size, orientation)
        for i, (size, orientation) in enumerate(
            [((4032, 3024), 6), ((4032, 3024), 1), ((3024, 4032), 1), ((2016, 1512), 3), ((2000, 1125), 8)]
        )
    ]
    scaled_images = [decode_image(p, **LIMITS, scale_for=cfg) for p in photos]
    # Each photo really took the reduced path (otherwise this test would compare a path with itself).
    assert all(max(img.size) <= 1008 for img in scaled_images)
    full = bundle.encode_pixels(np.stack([preprocess_image(decode_image(p, **LIMITS), cfg) for p in photos]))
    scaled = bundle.encode_pixels(np.stack([preprocess_image(img, cfg) for img in scaled_images]))
    cosines = np.sum(full * scaled, axis=1)
    assert cosines.min() >= 0.995, cosines
    # For scale: different photos are much further apart than a photo's two decodes.
    assert (full @ full.T)[np.triu_indices(len(photos), 1)].max() < 0.99
