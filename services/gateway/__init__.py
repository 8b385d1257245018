"""crossmodal gateway service."""
