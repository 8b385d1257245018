"""Fixtures of the reshard tests: the shared model bundle and a one-node JetStream server."""

from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture
from tests.gateway.test_log_writer import nats  # noqa: F401 - a one-node JetStream server on a free port
