"""What every crossmodal service shares: config, logging, metrics, interceptors, server bootstrap, health."""
