"""Image decoding limits and preprocessing parity with open_clip's evaluation transform."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from crossmodal.bundle import ImageConfig, ImageInputError, decode_image, preprocess_image

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
