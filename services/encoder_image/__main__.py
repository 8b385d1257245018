"""Entry point of the encoder_image service: `python -m services.encoder_image`."""

from __future__ import annotations

import sys

from services.common.entrypoint import service_main
from services.encoder_image.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, EncoderImageConfig
from services.encoder_image.service import EncoderImageService


def main() -> int:
    """Run the encoder_image service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-encoder-image",
        EncoderImageConfig,
        EncoderImageService,
        port=DEFAULT_PORT,
        metrics_port=DEFAULT_METRICS_PORT,
    )


if __name__ == "__main__":
    sys.exit(main())
