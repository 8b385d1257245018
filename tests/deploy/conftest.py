"""Fixtures of the deployment tests: the shared model bundle, and the service image built for real."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture, defined once here
from tests.support import ROOT

IMAGE_SCRIPT = ROOT / "scripts" / "image.sh"
ENGINE_SCRIPT = ROOT / "scripts" / "docker_engine.sh"
# The tests' own tag: `make image` (crossmodal:<version>) is left as it was; the layers are shared.
TEST_IMAGE = "crossmodal"
TEST_TAG = "test"


def docker_missing() -> str | None:
    """Why no Docker engine can be used here (a skip reason), or None when one answers `docker info`."""
    how = f"`make test` installs and starts one when it can ({ENGINE_SCRIPT}; run it to see why it cannot)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"no Docker engine: the docker command is not installed; {how}"
    except subprocess.TimeoutExpired:
        return f"no Docker engine: docker info did not answer within 30 s; {how}"
    if info.returncode != 0:
        detail = " ".join(info.stderr.split())[:300]
        return f"no Docker engine answers docker info ({detail}); {how}"
    return None


@dataclass(frozen=True)
class BuiltImage:
    """The image scripts/image.sh built for the tests, with what the build reported."""

    ref: str
    size_bytes: int
    build_seconds: float
    report: str


@pytest.fixture(scope="session")
def service_image() -> BuiltImage:
    """The service image built as `make image BASE=local` builds it (no registry needed); skips without Docker.

    The local Debian base, the wheelhouse and the layers are cached between runs, so only the first build
    on a machine pays for mmdebstrap and pip install.
    """
    reason = docker_missing()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    build = subprocess.run(
        [
            "bash",
            str(IMAGE_SCRIPT),
            "--base",
            "local",
            "--image",
            TEST_IMAGE,
            "--tag",
            TEST_TAG,
            "--python",
            sys.executable,
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, f"scripts/image.sh failed:\n{build.stderr[-6000:]}"
    ref = build.stdout.strip().splitlines()[-1]
    assert ref == f"{TEST_IMAGE}:{TEST_TAG}", build.stdout
    size = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True, timeout=60
    )
    assert size.returncode == 0, size.stderr
    return BuiltImage(ref, int(size.stdout.strip()), time.monotonic() - started, build.stderr)
