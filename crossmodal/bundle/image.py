"""Image decoding with input limits, and CLIP preprocessing in numpy + Pillow (no torch).

:func:`preprocess_image` reproduces open_clip's evaluation transform step by step with the
same Pillow calls torchvision makes on PIL images: resize in the image's own mode, centre crop
(or pad), convert to RGB, scale to [0, 1], normalise. The order matters: Pillow resizes RGBA
with premultiplied alpha and palette images with nearest neighbour, and converting first would
change the pixels the model sees.

Large JPEGs (camera photos) are decoded at a reduced scale when the caller passes the tower's
:class:`ImageConfig`: libjpeg scales in the DCT domain (1/2, 1/4, 1/8) for a fraction of the cost of a
full decode, and the smallest scale whose result is still at least twice what the resize step
produces per dimension keeps the model's input close to a full decode's (the bicubic filter then
still averages at least 2x2 decoded pixels per output pixel). Images with no such margin, and
every other format, decode exactly as before.
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


# EXIF orientations 5-8 swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_TRANSPOSING_ORIENTATIONS = frozenset({2, 3, 4, 5, 6, 7, 8})
# A reduced decode keeps at least this many decoded pixels per pixel of the resize step, per dimension.
DRAFT_MARGIN = 2


def resized_size(width: int, height: int, cfg: ImageConfig) -> tuple[int, int]:
    """The (width, height) that :func:`resize_and_crop` resizes an image of this size to, before cropping."""
    target = cfg.size
    if cfg.resize_mode == "squash":
        return target[1], target[0]
    if cfg.resize_mode == "longest" or target[0] != target[1]:
        ratio_h, ratio_w = height / target[0], width / target[1]
        ratio = max(ratio_h, ratio_w) if cfg.resize_mode == "longest" else min(ratio_h, ratio_w)
        return round(width / ratio), round(height / ratio)
    # torchvision's Resize(int): the short side becomes `size`, the long side is truncated.
    short, long = sorted((width, height))
    new_short, new_long = target[0], int(target[0] * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def draft_request(width: int, height: int, orientation: int, cfg: ImageConfig) -> tuple[int, int]:
    """The smallest (width, height), in the file's own orientation, a reduced decode may return for `cfg`."""
    if orientation in _SWAPPING_ORIENTATIONS:
        out_h, out_w = resized_size(height, width, cfg)
    else:
        out_w, out_h = resized_size(width, height, cfg)
    return max(1, DRAFT_MARGIN * out_w), max(1, DRAFT_MARGIN * out_h)


def _draft(img: Image.Image, cfg: ImageConfig) -> None:
    # Only libjpeg scales while decoding; Pillow's other decoders ignore draft() or would change modes.
    if img.format not in ("JPEG", "MPO"):
        return
    orientation = img.getexif().get(0x0112, 1)
    want_w, want_h = draft_request(img.width, img.height, orientation if isinstance(orientation, int) else 1, cfg)
    if img.width >= 2 * want_w and img.height >= 2 * want_h:
        # No mode argument: the file's colour mode (L, RGB, CMYK) stays as a full decode gives it.
        img.draft(None, (want_w, want_h))


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, scale_for: ImageConfig | None = None) -> Image.Image:
    """Decode an uploaded image safely: size limits first, EXIF orientation applied, first frame only.

    With ``scale_for``, a JPEG large enough is decoded at the smallest DCT scale that still leaves at
    least twice the pixels the resize step for that config needs (see the module's docstring);
    without it, or for any other image, the full image is decoded.

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
        # After seek(0): an MPO's seek rebuilds the tile from the full size and would undo the draft.
        if scale_for is not None:
            _draft(img, scale_for)
        img.load()
        # Only when there is something to do: without a rotation, exif_transpose returns a copy of
        # the whole decoded image, which for a large PNG costs as much as a resize.
        if img.getexif().get(0x0112, 1) in _TRANSPOSING_ORIENTATIONS:
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
    width, height = resized_size(img.width, img.height, cfg)
    img = _resize(img, (height, width), INTERPOLATIONS[cfg.interpolation])
    if cfg.resize_mode == "squash":
        return img
    # open_clip pads with fill_color only in "longest" mode; its centre crop pads with 0.
    return _center_crop_or_pad(img, cfg.size, cfg.fill_color if cfg.resize_mode == "longest" else 0)


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
