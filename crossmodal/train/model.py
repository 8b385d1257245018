"""The demo model's architecture: a small open_clip CLIP (ResNet or ViT image tower, transformer text tower)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEMO_MODEL_NAME = "crossmodal-demo-tiny"


@dataclass(frozen=True)
class DemoArchitecture:
    """Sizes of the demo CLIP; `vocab_size` comes from the reduced tokenizer."""

    vocab_size: int
    embed_dim: int = 128
    image_size: int = 64
    # "resnet" (open_clip's ModifiedResNet) or "vit". A ViT of this size, trained for the CPU budget,
    # learnt colours and places but not shapes (own-style shape accuracy at chance); the ResNet's
    # convolutions pick up shapes from the same data, and its steps are ~35% cheaper.
    vision_kind: str = "resnet"
    resnet_width: int = 16
    resnet_layers: tuple[int, ...] = (1, 1, 1, 1)
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_head_width: int = 32
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    context_length: int = 48

    def open_clip_config(self) -> dict[str, Any]:
        """Return the model config in open_clip's own format (as in its `model_configs/*.json`)."""
        vision: dict[str, Any]
        if self.vision_kind == "resnet":
            # open_clip builds a ModifiedResNet when `layers` is a list; heads = width * 32 / head_width.
            vision = {
                "image_size": self.image_size,
                "layers": list(self.resnet_layers),
                "width": self.resnet_width,
                "head_width": self.vision_head_width,
            }
        elif self.vision_kind == "vit":
            vision = {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "head_width": self.vision_head_width,
                "patch_size": self.patch_size,
            }
        else:
            raise ValueError(f"vision_kind must be 'resnet' or 'vit', not {self.vision_kind!r}")
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": vision,
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": self.vocab_size,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the architecture as JSON-ready data."""
        return asdict(self)


def build_model(arch: DemoArchitecture) -> Any:
    """Create the (untrained) open_clip CLIP model for `arch`; imports torch and open_clip."""
    from crossmodal.export._torch_compat import import_open_clip

    open_clip = import_open_clip()
    return open_clip.model.CLIP(**arch.open_clip_config())
