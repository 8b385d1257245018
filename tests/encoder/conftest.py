"""Fixtures of the encoder tests: a model bundle, the in-process reference, and real servers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crossmodal.bundle import MANIFEST_FILE, ModelBundle
from tests.encoder.helpers import base_env
from tests.support import ROOT, ServiceProcess

DEFAULT_BUNDLE = ROOT / "models" / "default"
TINY_CONFIG = ROOT / "tests" / "data" / "tiny_clip.json"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's default bundle, or (before it is committed) a tiny random one exported here."""
    if (DEFAULT_BUNDLE / MANIFEST_FILE).is_file():
        return DEFAULT_BUNDLE
    from crossmodal.export.exporter import export_bundle, load_open_clip_model

    loaded = load_open_clip_model(model_config=TINY_CONFIG, seed=0)
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(
        loaded.model,
        out,
        model_id=loaded.model_id,
        context_length=loaded.context_length,
        source=loaded.source,
        precisions=("fp32", "int8"),
    )
    return out


@pytest.fixture(scope="session")
def reference(bundle_dir: Path) -> ModelBundle:
    """The bundle opened in this process: what the servers' vectors must equal."""
    return ModelBundle.open(bundle_dir, precision="fp32", providers=["CPUExecutionProvider"], intra_op_threads=1)


@pytest.fixture(scope="session")
def start_encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceProcess]]:
    """Start encoder servers (stopped at the end of the session): start(module, env) -> ready process."""
    started: list[ServiceProcess] = []
    workdir = tmp_path_factory.mktemp("encoders")

    def start(module: str, env: dict[str, str]) -> ServiceProcess:
        proc = ServiceProcess(module, workdir / f"{len(started)}", env)
        started.append(proc)
        return proc.wait_ready(timeout=120)

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.terminate()
        proc.close()


@pytest.fixture(scope="session")
def text_server(start_encoder: Callable[..., ServiceProcess], bundle_dir: Path) -> ServiceProcess:
    """An encoder_text server with the test limits."""
    return start_encoder("services.encoder_text", base_env(bundle_dir))


@pytest.fixture(scope="session")
def image_server(start_encoder: Callable[..., ServiceProcess], bundle_dir: Path) -> ServiceProcess:
    """An encoder_image server with the test limits."""
    return start_encoder("services.encoder_image", base_env(bundle_dir))
