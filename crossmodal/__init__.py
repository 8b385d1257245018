"""crossmodal: cross-modal retrieval over CLIP embeddings (client SDK, CLI, model tooling)."""

__version__ = "0.1.0"

__all__ = ["Client", "Item", "__version__"]


def __getattr__(name: str) -> object:
    """Import the SDK lazily so that `import crossmodal` stays light for the services."""
    if name in ("Client", "Item"):
        from crossmodal import client

        return getattr(client, name)
    raise AttributeError(name)
