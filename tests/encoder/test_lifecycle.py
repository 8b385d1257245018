"""Encoder life cycle: config checks, truthful readiness, the thin __main__, a stop that keeps the loop serving."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.bundle import MANIFEST_FILE, ModelBundle
from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc, types_pb2
from services.common.config import ConfigError, load_config
from services.common.server import start_server
from services.encoder.config import EncoderConfig, EncoderServiceConfig, resolve_bundle_path
from services.encoder.engine import Encoded, Prepared, Tower
from services.encoder.errors import EncoderNotReadyError, InvalidItemError
from services.encoder.service import EncoderService
from services.encoder_image.__main__ import build as build_image
from services.encoder_text.__main__ import build as build_text
from services.encoder_text.tower import TextTower
from tests.encoder.helpers import base_env
from tests.support import ROOT

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def text_config(bundle_dir: Path, **extra: str) -> EncoderServiceConfig:
    """The encoder configuration of the test servers, on a free loopback port."""
    env = {**base_env(bundle_dir, **extra), "CROSSMODAL_HOST": "127.0.0.1", "CROSSMODAL_PORT": "0"}
    return load_config(EncoderServiceConfig, env)


def test_health_is_not_serving_and_calls_unavailable_until_the_model_is_warm(bundle_dir: Path) -> None:
    config = text_config(bundle_dir)
    service = build_text(config)

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
            with pytest.raises(EncoderNotReadyError):
                service.engine.model()

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
        build_text(text_config(tmp_path / "nowhere"))
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
        build_image(load_config(EncoderServiceConfig, base_env(partial, precision="int8")))
    assert str(info.value).startswith("CROSSMODAL_ENCODER_PRECISION:")
    assert "no int8 variant" in str(info.value)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_a_provider_that_is_not_installed_is_a_configuration_error(bundle_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_text(text_config(bundle_dir, providers="cuda,cpu"))
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
    service = build_text(text_config(bundle_dir, precision="int8"))
    int8 = ModelBundle.open(bundle_dir, precision="int8", providers=["CPUExecutionProvider"], towers=("text",))

    async def main() -> list[Encoded | Exception]:
        await service.start()
        try:
            return await service.engine.encode(["a green star"])
        finally:
            await service.stop()

    (result,) = asyncio.run(main())
    assert isinstance(result, Encoded), result
    assert service.engine.bundle is not None and service.engine.bundle.precision == "int8"
    # Alone in its batch, as here: int8 activations are quantised per batch, so company would change it.
    np.testing.assert_allclose([result.vector], int8.encode_texts(["a green star"]), atol=2e-5)


def test_the_contract_limits_are_read_from_the_shared_variables(bundle_dir: Path) -> None:
    config = text_config(bundle_dir)
    assert (config.encoder.limits.max_text_chars, config.encoder.limits.max_image_bytes) == (300, 200_000)
    assert config.encoder.max_image_pixels == 1_000_000


class GatedTower:
    """A real tower whose `stage` ("prepare" or "infer"), once armed, waits for a gate: slow work in flight."""

    def __init__(self, inner: Tower, stage: str, armed: threading.Event, gate: threading.Event) -> None:
        self._inner = inner
        self._stage = stage
        self._armed = armed
        self._gate = gate
        self.entered = threading.Event()
        self.preprocess_chunk = inner.preprocess_chunk

    def _wait(self, stage: str) -> None:
        if stage == self._stage and self._armed.is_set():
            self.entered.set()
            self._gate.wait(30)

    def check(self, content: Any) -> None:
        """The real tower's checks."""
        self._inner.check(content)

    def cheap(self, contents: Sequence[Any]) -> bool:
        """Never: a gated preparation must wait in the pool, not on the event loop."""
        return False

    def prepare(self, contents: Sequence[Any]) -> list[Prepared | InvalidItemError]:
        """The real preprocessing, after the gate when gated."""
        self._wait("prepare")
        return self._inner.prepare(contents)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The real inference, after the gate when gated."""
        self._wait("infer")
        return self._inner.infer(batch)

    def warmup_contents(self) -> list[Any]:
        """The real tower's warm-up inputs."""
        return self._inner.warmup_contents()

    def describe(self) -> Mapping[str, int]:
        """The real tower's description."""
        return self._inner.describe()


@pytest.mark.parametrize("stage", ["prepare", "infer"])
def test_stopping_with_work_in_flight_keeps_the_event_loop_serving(bundle_dir: Path, stage: str) -> None:
    config = text_config(bundle_dir)
    armed, gate = threading.Event(), threading.Event()
    towers: list[GatedTower] = []

    def make_tower(bundle: ModelBundle, cfg: EncoderConfig) -> GatedTower:
        towers.append(GatedTower(TextTower(bundle, cfg), stage, armed, gate))
        return towers[-1]

    service = EncoderService(config, "text", types_pb2.MODALITY_TEXT, make_tower)
    # Opens the gate if the event loop is stuck, so that a regression fails instead of hanging.
    rescue = threading.Timer(5.0, gate.set)

    async def main() -> tuple[float, bool, tuple[int, str]]:
        running = await start_server(service, config.server)
        try:
            await service.start()
            await running.set_serving(True)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                encoder = encoder_pb2_grpc.EncoderServiceStub(channel)
                armed.set()
                request = encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(key="k", text="in flight")])
                call = asyncio.ensure_future(encoder.Encode(request, timeout=60))
                await asyncio.to_thread(towers[0].entered.wait, 30)
                stopping = asyncio.create_task(service.stop())
                rescue.start()
                asked = time.monotonic()
                await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                answered_after = time.monotonic() - asked
                stopped_early = stopping.done()
                gate.set()
                await asyncio.wait_for(stopping, 30)
                return answered_after, stopped_early, await outcome(call)
        finally:
            gate.set()
            await running.drain(1)

    try:
        answered_after, stopped_early, (code, message) = asyncio.run(main())
    finally:
        rescue.cancel()
    assert answered_after < 2.0, f"a health check waited {answered_after:.2f} s while the encoder stopped"
    assert not stopped_early, "stop() returned while the tower was still working"
    # The item in flight is refused as by a stopping server, which a client retries elsewhere: the
    # whole call when preprocessing outlived the batcher, the item when its batch was cut short.
    assert (code, message) == (UNAVAILABLE, "the encoder is shutting down")


async def outcome(call: asyncio.Future[encoder_pb2.EncodeResponse]) -> tuple[int, str]:
    """The status of a one-item Encode call: the call's when it failed, else the item's."""
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().value[0], exc.details() or ""
    (result,) = response.results
    return result.status.code, result.status.message


class ThreadRecordingTower(TextTower):
    """The real text tower, noting the thread each preparation ran on."""

    threads: list[str] = []

    def prepare(self, contents: Sequence[Any]) -> list[Prepared | InvalidItemError]:
        """The real tokenization, recording where it ran."""
        self.threads.append(threading.current_thread().name)
        return super().prepare(contents)


def test_a_short_query_is_tokenized_on_the_event_loop_and_long_texts_in_the_pool(bundle_dir: Path) -> None:
    config = text_config(bundle_dir)
    service = EncoderService(config, "text", types_pb2.MODALITY_TEXT, ThreadRecordingTower)

    async def main() -> tuple[str, list[str]]:
        await service.start()
        try:
            ThreadRecordingTower.threads.clear()
            await service.engine.encode(["a red circle"])
            await service.engine.encode(["a long caption " * 20])
            return threading.current_thread().name, list(ThreadRecordingTower.threads)
        finally:
            await service.stop()

    loop_thread, threads = asyncio.run(main())
    assert threads[0] == loop_thread  # ~20 us of tokenizing costs less than a hop to the pool and back
    assert threads[1] != loop_thread  # 300 characters go to the pool
