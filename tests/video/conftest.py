"""Fixtures of the video tests: generated videos with known timelines and clusters to ingest them into."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crossmodal.cluster import ClusterSpec, LocalCluster
from crossmodal.scenes.video import VideoSpec, render_video, video_spec
from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture

# The gateway's video limits in the test clusters: small, so that going past them is cheap to test.
MAX_SECONDS = 60
MAX_FRAMES = 50


def make_video(folder: Path, name: str, seed: int, duration: float = 16.0) -> tuple[Path, VideoSpec]:
    """Render the video of `seed` (192 px, 10 frames/s) to folder/name."""
    spec = video_spec(seed, duration=duration)
    return render_video(spec, folder / name), spec


def _running(factory: pytest.TempPathFactory, bundle: Path, replicas: int) -> Iterator[LocalCluster]:
    """A 2-shard cluster with `replicas` per shard (more than one: behind the write log) and small video limits."""
    env = {
        "CROSSMODAL_GATEWAY_VIDEO_MAX_SECONDS": str(MAX_SECONDS),
        "CROSSMODAL_GATEWAY_VIDEO_MAX_FRAMES": str(MAX_FRAMES),
    }
    data = factory.mktemp(f"video-{replicas}")
    spec = ClusterSpec.on_free_ports(data, shards=2, replicas=replicas, bundle=bundle, gateway_env=env)
    with LocalCluster(spec) as running:
        yield running


@pytest.fixture(scope="session")
def log_cluster(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[LocalCluster]:  # noqa: F811
    """2 shards x 2 replicas behind the write log (nats JetStream)."""
    yield from _running(tmp_path_factory, bundle_dir, replicas=2)


@pytest.fixture(scope="session")
def direct_cluster(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[LocalCluster]:  # noqa: F811
    """2 shards x 1 replica, written directly by the gateway (no log)."""
    yield from _running(tmp_path_factory, bundle_dir, replicas=1)
