"""crossmodal encoder_text service."""
