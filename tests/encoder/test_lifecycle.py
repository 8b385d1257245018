"""Encoder start-up: configuration checks, truthful readiness, and the thin __main__."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.bundle import MANIFEST_FILE, ModelBundle
from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc
from services.common.config import ConfigError, load_config
from services.common.encoder import resolve_bundle_path
from services.common.server import start_server
from services.encoder_image.config import EncoderImageConfig
from services.encoder_image.service import EncoderImageService
from services.encoder_text.config import EncoderTextConfig
from services.encoder_text.service import EncoderTextService
from tests.encoder.helpers import base_env
from tests.support import ROOT


def text_config(bundle_dir: Path, **extra: str) -> EncoderTextConfig:
    """The encoder_text configuration of the test servers, on a free loopback port."""
    env = {**base_env(bundle_dir, **extra), "CROSSMODAL_HOST": "127.0.0.1", "CROSSMODAL_PORT": "0"}
    return load_config(EncoderTextConfig, env)


def test_health_is_not_serving_and_calls_unavailable_until_the_model_is_warm(bundle_dir: Path) -> None:
    config = text_config(bundle_dir)
    service = EncoderTextService(config)

    async def main() -> None:
        running = await start_server(service, config.server)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            encoder = encoder_pb2_grpc.EncoderServiceStub(channel)
            request = encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(text="early")])
            status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await encoder.Encode(request)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in (info.value.details() or "")
            assert not service.engine.ready

            await service.start()
            await running.set_serving(True)
            status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            response = await encoder.Encode(request)
            assert response.results[0].status.code == 0 and len(response.results[0].vector) == response.dim
        await running.drain(1)
        await service.stop()

    asyncio.run(main())


def test_a_missing_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        EncoderTextService(text_config(tmp_path / "nowhere"))
    assert str(info.value).startswith("CROSSMODAL_ENCODER_BUNDLE: no model bundle directory")


def test_a_precision_the_bundle_lacks_is_a_configuration_error(bundle_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "bundle"
    partial.mkdir()
    for entry in bundle_dir.iterdir():
        (partial / entry.name).symlink_to(entry)
    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    manifest["variants"].pop("int8", None)
    (partial / MANIFEST_FILE).unlink()
    (partial / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError) as info:
        EncoderImageService(load_config(EncoderImageConfig, base_env(partial, precision="int8")))
    assert str(info.value).startswith("CROSSMODAL_ENCODER_PRECISION:")
    assert "no int8 variant" in str(info.value)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_a_provider_that_is_not_installed_is_a_configuration_error(bundle_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        EncoderTextService(text_config(bundle_dir, providers="cuda,cpu"))
    assert str(info.value).startswith("CROSSMODAL_ENCODER_PROVIDERS:")
    assert "CUDAExecutionProvider" in str(info.value)


def test_provider_aliases_and_defaults(bundle_dir: Path) -> None:
    assert text_config(bundle_dir).encoder.provider_names is None
    names = text_config(bundle_dir, providers="CUDA, cpu,TensorrtExecutionProvider").encoder.provider_names
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("max_batch", "0", "must be >= 1"),
        ("precision", "fp64", "expected one of fp32, fp16, int8"),
        ("max_wait_ms", "soon", "expected a number"),
        ("queue_size", "-1", "must be >= 1"),
    ],
)
def test_bad_values_name_their_variable(bundle_dir: Path, name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        text_config(bundle_dir, **{name: value})
    assert str(info.value).startswith(f"CROSSMODAL_ENCODER_{name.upper()}:") and fragment in str(info.value)


def test_the_queue_must_hold_a_full_batch(bundle_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        text_config(bundle_dir, max_batch="16", queue_size="8")
    assert "CROSSMODAL_ENCODER_QUEUE_SIZE (8) must be at least CROSSMODAL_ENCODER_MAX_BATCH (16)" in str(info.value)


def test_a_relative_bundle_path_is_found_from_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_bundle_path(Path("tests/data")) == ROOT / "tests" / "data"
    (tmp_path / "tests" / "data").mkdir(parents=True)
    assert resolve_bundle_path(Path("tests/data")) == Path("tests/data")


def test_the_process_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CROSSMODAL_ENCODER_BUNDLE": str(tmp_path / "none")}
    proc = subprocess.run(
        [sys.executable, "-m", "services.encoder_image"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "configuration error: CROSSMODAL_ENCODER_BUNDLE" in proc.stderr


def test_the_configured_precision_is_served(bundle_dir: Path) -> None:
    service = EncoderTextService(text_config(bundle_dir, precision="int8"))
    int8 = ModelBundle.open(bundle_dir, precision="int8", providers=["CPUExecutionProvider"], towers=("text",))

    async def main() -> list[encoder_pb2.EncodeResult]:
        await service.start()
        try:
            return await service.engine.encode([encoder_pb2.EncodeItem(key="q", text="a green star")])
        finally:
            await service.stop()

    (result,) = asyncio.run(main())
    assert service.engine.bundle is not None and service.engine.bundle.precision == "int8"
    # Alone in its batch, as here: int8 activations are quantised per batch, so company would change it.
    np.testing.assert_allclose([result.vector], int8.encode_texts(["a green star"]), atol=2e-5)
