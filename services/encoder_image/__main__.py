"""Entry point of the encoder_image service: `python -m services.encoder_image` or `crossmodal-encoder-image`."""

from __future__ import annotations

import sys

from crossmodal.v1 import types_pb2
from services.common.entrypoint import service_main
from services.encoder.config import EncoderServiceConfig
from services.encoder.service import EncoderService
from services.encoder_image.tower import ImageTower

DEFAULT_PORT = 50053
DEFAULT_METRICS_PORT = 9102


def build(config: EncoderServiceConfig) -> EncoderService:
    """The encoder service with the image tower."""
    return EncoderService(config, "image", types_pb2.MODALITY_IMAGE, ImageTower)


def main() -> int:
    """Run the encoder_image service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-encoder-image", EncoderServiceConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT
    )


if __name__ == "__main__":
    sys.exit(main())
