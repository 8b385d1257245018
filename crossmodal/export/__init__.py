"""Model export to ONNX model bundles: open_clip CLIP models and transformers CLAP models (the `export` extra)."""

from crossmodal.export.clap import LoadedClap, export_clap_bundle, load_clap_model
from crossmodal.export.exporter import (
    ExportError,
    LoadedModel,
    export_bundle,
    image_config_from_model,
    load_open_clip_model,
)

__all__ = [
    "ExportError",
    "LoadedClap",
    "LoadedModel",
    "export_bundle",
    "export_clap_bundle",
    "image_config_from_model",
    "load_clap_model",
    "load_open_clip_model",
]
