"""Entry point of the encoder_text service: `python -m services.encoder_text` or `crossmodal-encoder-text`."""

from __future__ import annotations

import sys

from crossmodal.v1 import types_pb2
from services.common.entrypoint import service_main
from services.encoder.config import EncoderServiceConfig
from services.encoder.service import EncoderService
from services.encoder_text.tower import TextTower

DEFAULT_PORT = 50052
DEFAULT_METRICS_PORT = 9101


def build(config: EncoderServiceConfig) -> EncoderService:
    """The encoder service with the text tower."""
    return EncoderService(config, "text", types_pb2.MODALITY_TEXT, TextTower)


def main() -> int:
    """Run the encoder_text service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-encoder-text", EncoderServiceConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT
    )


if __name__ == "__main__":
    sys.exit(main())
