"""Entry point of the encoder_audio service: `python -m services.encoder_audio` or `crossmodal-encoder-audio`."""

from __future__ import annotations

import sys

from crossmodal.v1 import types_pb2
from services.common.entrypoint import service_main
from services.encoder.config import EncoderServiceConfig
from services.encoder.service import EncoderService
from services.encoder_audio.tower import AudioTower

DEFAULT_PORT = 50055
DEFAULT_METRICS_PORT = 9104


def build(config: EncoderServiceConfig) -> EncoderService:
    """The encoder service with the audio tower."""
    return EncoderService(config, "audio", types_pb2.MODALITY_AUDIO, AudioTower)


def main() -> int:
    """Run the encoder_audio service until SIGTERM; the process exit status."""
    return service_main(
        "crossmodal-encoder-audio", EncoderServiceConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT
    )


if __name__ == "__main__":
    sys.exit(main())
