"""The encoder_image service: the shared encoder engine with the image tower."""

from __future__ import annotations

from crossmodal.v1 import types_pb2
from services.common.encoder import EncoderService
from services.encoder_image.config import EncoderImageConfig
from services.encoder_image.tower import ImageTower


class EncoderImageService(EncoderService):
    """Serves crossmodal.v1.EncoderService for images."""

    name = "encoder_image"

    def __init__(self, config: EncoderImageConfig) -> None:
        self.config = config
        super().__init__(
            config.encoder,
            "image",
            types_pb2.MODALITY_IMAGE,
            lambda bundle: ImageTower(bundle, config.max_image_bytes, config.max_image_pixels),
        )
