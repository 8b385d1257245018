"""Tests of the scene generator, the demo-model training loop, its evaluation and the shipped bundle."""
