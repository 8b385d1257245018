"""Fixtures of the CLI tests: the shared model bundle."""

from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture
