"""Model export: open_clip models to ONNX model bundles (needs the `export` extra: torch, open_clip)."""

from crossmodal.export.exporter import (
    ExportError,
    LoadedModel,
    export_bundle,
    image_config_from_model,
    load_open_clip_model,
)

__all__ = ["ExportError", "LoadedModel", "export_bundle", "image_config_from_model", "load_open_clip_model"]
