"""Configuration of the encoder_image service."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig, setting
from services.common.encoder import EncoderConfig

DEFAULT_PORT = 50053
DEFAULT_METRICS_PORT = 9102


@dataclasses.dataclass(frozen=True)
class EncoderImageConfig:
    """Everything the encoder_image service reads from the environment."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    max_image_bytes: int = setting(
        "ENCODER_MAX_IMAGE_BYTES",
        20 * 1024 * 1024,
        "Largest encoded image accepted, in bytes (larger: INVALID_ARGUMENT).",
        min=1,
        max=2**31 - 1,
    )
    max_image_pixels: int = setting(
        "ENCODER_MAX_IMAGE_PIXELS",
        50_000_000,
        "Largest image accepted, in "
        "pixels (width x height), checked from the header before decoding "
        "(decompression bombs).",
        min=1,
        max=2**40,
    )
