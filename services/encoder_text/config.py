"""Configuration of the encoder_text service."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig, setting
from services.common.encoder import EncoderConfig

DEFAULT_PORT = 50052
DEFAULT_METRICS_PORT = 9101


@dataclasses.dataclass(frozen=True)
class EncoderTextConfig:
    """Everything the encoder_text service reads from the environment."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    max_text_chars: int = setting(
        "ENCODER_MAX_TEXT_CHARS",
        2048,
        "Longest text accepted, in characters "
        "(longer: INVALID_ARGUMENT). Texts beyond the model's context are "
        "truncated and flagged.",
        min=1,
        max=1_000_000,
    )
