"""The crossmodal services: encoders, index shards and the gateway, over one shared core."""
