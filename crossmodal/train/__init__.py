"""Training and evaluation of the built-in demo model on procedural scenes (needs the `export` extra)."""
