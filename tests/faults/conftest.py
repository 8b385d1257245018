"""Fixtures of the fault tests: the shared model bundle."""

from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture
