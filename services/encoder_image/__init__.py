"""crossmodal encoder_image service."""
