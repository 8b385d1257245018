"""Entry point of the encoder_text service: `python -m services.encoder_text` or `crossmodal-encoder-text`."""

from __future__ import annotations

import sys

from services.common.entrypoint import service_main
from services.encoder_text.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, EncoderTextConfig
from services.encoder_text.service import EncoderTextService


def main() -> int:
    """Run the encoder_text service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-encoder-text",
        EncoderTextConfig,
        EncoderTextService,
        port=DEFAULT_PORT,
        metrics_port=DEFAULT_METRICS_PORT,
    )


if __name__ == "__main__":
    sys.exit(main())
