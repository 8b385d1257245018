"""Each service as a real process: health, reflection, /metrics, graceful drain on SIGTERM, bad config."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import ROOT, ServiceProcess, metric_value, wait_for

SERVICES = {
    "services.gateway": "crossmodal.v1.GatewayService",
    "services.encoder_text": "crossmodal.v1.EncoderService",
    "services.encoder_image": "crossmodal.v1.EncoderService",
    "services.index": "crossmodal.v1.IndexService",
}
HEALTH = "grpc.health.v1.Health"


def _listed_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return {s.name for s in reply.list_services_response.service}


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_service_process_serves_health_reflection_and_metrics(module: str, tmp_path: Path) -> None:
    env = {"CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "data")}
    helpers: list[ServiceProcess] = []
    if module == "services.gateway":
        # The gateway is ready only once its encoders answer: give it real ones.
        for name in ("services.encoder_text", "services.encoder_image"):
            helpers.append(ServiceProcess(name, tmp_path / name, {}).wait_ready(timeout=120))
        env.update(
            CROSSMODAL_GATEWAY_TEXT_ENCODERS=helpers[0].address, CROSSMODAL_GATEWAY_IMAGE_ENCODERS=helpers[1].address
        )
    proc = ServiceProcess(module, tmp_path, env)
    try:
        proc.wait_ready(timeout=120)
        with proc.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICES[module]):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert {SERVICES[module], HEALTH} <= _listed_services(channel)
            before = metric_value(
                proc.metrics(), "crossmodal_rpc_requests_total", service=HEALTH, method="Check", code="OK"
            )
            for _ in range(3):
                health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        after = metric_value(proc.metrics(), "crossmodal_rpc_requests_total", service=HEALTH, method="Check", code="OK")
        assert after - before == 3
        assert proc.terminate() == 0
        assert '"event": "stopped"' in proc.log()
    finally:
        proc.close()
        for helper in helpers:
            helper.close()


def test_sigterm_lets_the_in_flight_call_finish(tmp_path: Path) -> None:
    # The fault hook holds every Health/Check for 1.5 s, so the call is surely in flight at SIGTERM.
    proc = ServiceProcess(
        "services.index",
        tmp_path,
        {
            "CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "data"),
            "CROSSMODAL_FAULT_DELAY_MS": "1500",
            "CROSSMODAL_FAULT_METHODS": "Check",
            "CROSSMODAL_GRACE_SECONDS": "20",
        },
    )
    try:
        proc.wait_ready(timeout=120)
        outcome: dict[str, object] = {}

        def call() -> None:
            with proc.channel() as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=30
                    )
                    outcome["status"] = reply.status
                except grpc.RpcError as exc:
                    outcome["error"] = exc.code()

        caller = threading.Thread(target=call)
        caller.start()
        wait_for(
            lambda: metric_value(proc.metrics(), "crossmodal_rpc_in_flight", service=HEALTH, method="Check") >= 1,
            30,
            "the slow call to be in flight",
        )
        assert proc.terminate(timeout=60) == 0
        caller.join(30)
        # The call completes normally; it reports NOT_SERVING because health turned first during drain.
        assert outcome == {"status": health_pb2.HealthCheckResponse.NOT_SERVING}
        log = proc.log()
        assert log.index('"event": "draining"') < log.index('"event": "stopped"')
    finally:
        proc.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CROSSMODAL_PORT": "http"}, "CROSSMODAL_PORT: expected an integer, got 'http'"),
        ({"CROSSMODAL_LOG_LEVEL": "loud"}, "CROSSMODAL_LOG_LEVEL: expected one of debug, info, warning, error"),
        ({"CROSSMODAL_GRACE_SECONDS": "-1"}, "CROSSMODAL_GRACE_SECONDS: must be >= 0"),
    ],
)
def test_bad_config_stops_the_process_naming_the_variable(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.gateway"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
    )
    assert result.returncode == 2
    assert message in result.stderr
