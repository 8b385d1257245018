"""The encoder_text service: the shared encoder engine with the text tower."""

from __future__ import annotations

from crossmodal.v1 import types_pb2
from services.common.encoder import EncoderService
from services.encoder_text.config import EncoderTextConfig
from services.encoder_text.tower import TextTower


class EncoderTextService(EncoderService):
    """Serves crossmodal.v1.EncoderService for texts."""

    name = "encoder_text"

    def __init__(self, config: EncoderTextConfig) -> None:
        self.config = config
        super().__init__(
            config.encoder,
            "text",
            types_pb2.MODALITY_TEXT,
            lambda bundle: TextTower(bundle, config.max_text_chars),
        )
