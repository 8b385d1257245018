"""Image decoding with input limits, and CLIP preprocessing in numpy + Pillow (no torch).

:func:`preprocess_image` reproduces open_clip's evaluation transform step by step with the
same Pillow calls torchvision makes on PIL images: resize in the image's own mode, centre crop
(or pad), convert to RGB, scale to [0, 1], normalise. The order matters: Pillow resizes RGBA
with premultiplied alpha and palette images with nearest neighbour, and converting first would
change the pixels the model sees.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# open_clip's defaults (OpenAI's CLIP training statistics).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Pillow opens the multi-picture JPEGs (MPO) of phone cameras through its JPEG plugin.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class ImageInputError(ValueError):
    """An image a client sent cannot be used; ``reason`` says why and what to do about it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ImageConfig:
    """How the image tower expects its input: size, resize/crop, interpolation, mean and std."""

    size: tuple[int, int] = (224, 224)
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    fill_color: int = 0
    crop: str = field(default="center")

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"image size must be two positive integers, got {self.size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must hold three values each, std positive")
        if self.crop != "center":
            raise ValueError(f"crop must be 'center', got {self.crop!r}")

    @property
    def height(self) -> int:
        """Input height in pixels."""
        return self.size[0]

    @property
    def width(self) -> int:
        """Input width in pixels."""
        return self.size[1]

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form stored in ``model.json``."""
        return {
            "size": list(self.size),
            "resize_mode": self.resize_mode,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "fill_color": self.fill_color,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ImageConfig:
        """Build from the JSON form stored in ``model.json``."""
        size = data["size"]
        mean = data.get("mean", OPENAI_MEAN)
        std = data.get("std", OPENAI_STD)
        assert isinstance(size, list | tuple) and isinstance(mean, list | tuple) and isinstance(std, list | tuple)
        return cls(
            size=(int(size[0]), int(size[1])),
            resize_mode=str(data.get("resize_mode", "shortest")),
            interpolation=str(data.get("interpolation", "bicubic")),
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
            fill_color=int(data.get("fill_color", 0)),  # type: ignore[call-overload]
            crop=str(data.get("crop", "center")),
        )


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an uploaded image safely: size limits first, EXIF orientation applied, first frame only.

    Raises :class:`ImageInputError` for empty or oversized input, unsupported or corrupt data,
    zero-size images and images over ``max_pixels`` (checked from the header, before the pixels
    are decoded, so decompression bombs cost nothing). 16-bit and float greyscale images are
    scaled to 8 bits; other modes are left for :func:`preprocess_image`.
    """
    if not data:
        raise ImageInputError("the image is empty (0 bytes); send the encoded file's bytes")
    if len(data) > max_bytes:
        raise ImageInputError(
            f"the image is {len(data)} bytes, over the limit of {max_bytes} bytes; "
            "send a smaller or more compressed file"
        )
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; Pillow's own warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageInputError(
            f"the image is over the limit of {max_pixels} pixels ({exc}); downscale it before sending"
        ) from exc
    except UnidentifiedImageError as exc:
        # Pillow reports unknown formats, damaged headers and zero-size images alike here.
        raise ImageInputError(
            "the data is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF), "
            "or its header is damaged or declares a zero size"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"the image header cannot be read ({exc}); the file may be damaged") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageInputError(f"the image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"the image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels; downscale it before sending"
        )
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageInputError(f"the image data is truncated or corrupt ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"the image is over the limit of {max_pixels} pixels ({exc})") from exc
    return _to_8bit(img)


def _to_8bit(img: Image.Image) -> Image.Image:
    # Pillow's own I -> RGB conversion clips at 255, which would turn a 16-bit photo white.
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if img.mode == "I" and arr.max(initial=0) <= 255:
            scaled = np.clip(arr, 0, 255)
        else:
            scaled = np.clip(arr, 0, 65535) // 257
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return img


def _resize(img: Image.Image, size_hw: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    if (img.height, img.width) == size_hw:
        return img
    return img.resize((size_hw[1], size_hw[0]), resample)


def _keep_ratio_size(img: Image.Image, target: tuple[int, int], longest: bool) -> tuple[int, int]:
    ratio_h = img.height / target[0]
    ratio_w = img.width / target[1]
    ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
    return round(img.height / ratio), round(img.width / ratio)


def _pad(img: Image.Image, border: tuple[int, int, int, int], fill: int) -> Image.Image:
    bands = len(img.getbands())
    color: int | tuple[int, ...] = fill if bands == 1 else (fill,) * bands
    palette = img.getpalette() if img.mode == "P" else None
    padded = ImageOps.expand(img, border=border, fill=color)
    if palette is not None:
        padded.putpalette(palette)
    return padded


def _center_crop_or_pad(img: Image.Image, size_hw: tuple[int, int], fill: int) -> Image.Image:
    crop_h, crop_w = size_hw
    if crop_w > img.width or crop_h > img.height:
        dw = max(crop_w - img.width, 0)
        dh = max(crop_h - img.height, 0)
        img = _pad(img, (dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2), fill)
        if (img.height, img.width) == size_hw:
            return img
    top = int(round((img.height - crop_h) / 2.0))
    left = int(round((img.width - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def resize_and_crop(img: Image.Image, cfg: ImageConfig) -> Image.Image:
    """Resize and crop (or pad) ``img`` to the tower's input size as open_clip does, in its own mode."""
    resample = INTERPOLATIONS[cfg.interpolation]
    target = cfg.size
    if cfg.resize_mode == "squash":
        return _resize(img, target, resample)
    if cfg.resize_mode == "longest":
        img = _resize(img, _keep_ratio_size(img, target, longest=True), resample)
        return _center_crop_or_pad(img, target, cfg.fill_color)
    if target[0] == target[1]:
        # torchvision's Resize(int): the short side becomes `size`, the long side is truncated.
        short, long = sorted((img.width, img.height))
        new_short, new_long = target[0], int(target[0] * long / short)
        size_hw = (new_long, new_short) if img.width <= img.height else (new_short, new_long)
        img = _resize(img, size_hw, resample)
    else:
        img = _resize(img, _keep_ratio_size(img, target, longest=False), resample)
    return _center_crop_or_pad(img, target, 0)


def preprocess_image(img: Image.Image, cfg: ImageConfig) -> np.ndarray:
    """Turn a PIL image into the tower's float32 input (3, H, W), as open_clip's eval transform does."""
    rgb = resize_and_crop(img, cfg).convert("RGB")
    scaled = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    normalised = (scaled - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def preprocess_images(images: list[Image.Image], cfg: ImageConfig) -> np.ndarray:
    """Preprocess a list of images into one float32 batch of shape (n, 3, H, W)."""
    out = np.empty((len(images), 3, cfg.height, cfg.width), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = preprocess_image(img, cfg)
    return out
