"""crossmodal encoder_audio service."""
