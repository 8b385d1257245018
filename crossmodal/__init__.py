"""crossmodal: cross-modal retrieval over CLIP embeddings (client SDK, CLI, model tooling)."""

__version__ = "0.1.0"
