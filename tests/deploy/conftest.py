"""Fixtures of the deployment tests."""

from __future__ import annotations

from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture, defined once here
