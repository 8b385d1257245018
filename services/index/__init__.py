"""crossmodal index service."""
