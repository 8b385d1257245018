"""The image tower: the contract's size limit, safe decoding, CLIP preprocessing and the bundle's image model."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from crossmodal.bundle import ImageInputError, ModelBundle, decode_image, preprocess_image
from services.encoder.config import EncoderConfig
from services.encoder.engine import Prepared, prepare_each
from services.encoder.errors import InvalidItemError


def _warmup_images() -> list[bytes]:
    gradient = np.linspace(0, 255, 320 * 240 * 3, dtype=np.float64).reshape(240, 320, 3).astype(np.uint8)
    out = []
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(gradient, "RGB").save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


class ImageTower:
    """Checks, decodes and preprocesses images, and runs the bundle's image tower."""

    # One image per pool task, so that the images of one request decode in parallel.
    preprocess_chunk = 1

    def __init__(self, bundle: ModelBundle, config: EncoderConfig) -> None:
        self._bundle = bundle
        self._cfg = bundle.image_config
        self._limits = config.limits
        self._max_pixels = config.max_image_pixels
        # Pillow's own bomb guard is a process-wide default of ~89 M pixels; ours is configured
        # and checked first, so make Pillow's agree instead of refusing images we accept.
        Image.MAX_IMAGE_PIXELS = self._max_pixels

    def check(self, content: bytes) -> None:
        """Refuse empty images and images over CROSSMODAL_MAX_IMAGE_BYTES (`LimitError`) before the pool."""
        self._limits.check_image(content)

    def cheap(self, contents: Sequence[bytes]) -> bool:
        """Never: decoding an image can take tens of milliseconds."""
        return False

    def prepare(self, contents: Sequence[bytes]) -> list[Prepared | InvalidItemError]:
        """Decode each image within the limits and preprocess it as the model was trained."""
        return prepare_each(contents, self._prepare_one, "image")

    def _prepare_one(self, data: bytes) -> Prepared:
        try:
            # Scaled for the model's input: a camera photo decodes at 1/4 or 1/8 of its size.
            img = decode_image(
                data, max_bytes=self._limits.max_image_bytes, max_pixels=self._max_pixels, scale_for=self._cfg
            )
            return Prepared(preprocess_image(img, self._cfg))
        except ImageInputError as exc:
            raise InvalidItemError(exc.reason) from None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the image tower on preprocessed pixels (n, 3, H, W)."""
        return self._bundle.encode_pixels(batch)

    def warmup_contents(self) -> list[bytes]:
        """A JPEG and a PNG, to load the decoders before the first request."""
        return _warmup_images()

    def describe(self) -> Mapping[str, int]:
        """The square input size, in pixels."""
        return {"image_size": self._cfg.height}
