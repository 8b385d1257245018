"""`crossmodal up` as a supervisor: a child that dies comes back on its port and data; SIGTERM stops all, for good."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.client import Client, Item
from tests.cli.upcli import FREE_PORTS, ready_info, running_service, start_up, wait_reported
from tests.support import wait_for


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_up(up: subprocess.Popen[str], output: Path) -> str:
    """Wait for `up` to report the cluster; the gateway's address."""
    return wait_reported(up, output, r"gateway at ([0-9.]+:[0-9]+)", "crossmodal up to report the gateway")


def _restarted(logs: Path, name: str, old_pid: int) -> dict[str, int] | None:
    """The ready-file info of `name` once a process other than `old_pid` wrote it."""
    info = ready_info(logs).get(name)
    return info if info is not None and info["pid"] != old_pid else None


def test_a_killed_child_comes_back_on_its_port_and_sigterm_stops_everything(tmp_path: Path, bundle_dir: Path) -> None:
    data = tmp_path / "data"
    logs = data / "logs"
    up, output = start_up(
        tmp_path, *("--data-dir", str(data), "--bundle", str(bundle_dir), "--shards", "1", "--port", "0", *FREE_PORTS)
    )
    pids: dict[str, int] = {}
    try:
        gateway = _wait_up(up, output)
        before = ready_info(logs)
        pids.update({name: info["pid"] for name, info in before.items()})
        shard = before["index-0-0"]

        # A crash: the supervisor says so, and the shard comes back on the same port (the gateway's shard
        # map names it) with the same data directory.
        with Client(gateway) as client:
            (ack,) = list(client.ingest([Item("kept", text="a red circle")]))
            assert ack.ok, ack
        os.kill(shard["pid"], signal.SIGKILL)
        wait_for(
            lambda: "index-0-0 exited with -9; restarting in 0.5 s (restart 1)" in output.read_text(),
            30,
            "the supervisor to report the first restart",
        )
        again = wait_for(lambda: _restarted(logs, "index-0-0", shard["pid"]), 120, "index-0-0 to be SERVING again")
        pids["index-0-0 (restarted)"] = again["pid"]
        assert (again["port"], again["metrics_port"]) == (shard["port"], shard["metrics_port"])
        assert _serving(f"127.0.0.1:{again['port']}")
        wait_for(
            lambda: f"index-0-0 is SERVING again on 127.0.0.1:{shard['port']}" in output.read_text(),
            10,
            "the supervisor to report the shard back",
        )
        with Client(gateway) as client:
            # The gateway reconnects to the same address within about a second.
            found = wait_for(lambda: client.get(["kept"])[0], 30, "the gateway to read from the restarted shard")
            assert [i.id for i in found] == ["kept"]
            (ack,) = list(client.ingest([Item("after", text="a blue square")]))
            assert ack.ok, ack

        # It failed again soon after its restart: the back-off doubles.
        os.kill(again["pid"], signal.SIGKILL)
        wait_for(
            lambda: "index-0-0 exited with -9; restarting in 1 s (restart 2)" in output.read_text(),
            30,
            "the supervisor to report the second restart with a doubled back-off",
        )
        third = wait_for(lambda: _restarted(logs, "index-0-0", again["pid"]), 120, "index-0-0 to be back again")
        pids["index-0-0 (restarted twice)"] = third["pid"]
        assert third["port"] == shard["port"]
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        status = up.wait(90)
    text = output.read_text()
    assert status == 0, text
    # Stopping is final: what exits during the shutdown is not restarted.
    shutdown = text[text.index("stopping...") :]
    assert "restarting" not in shutdown and "SERVING again" not in shutdown, shutdown
    assert shutdown.rstrip().endswith("stopped"), shutdown
    assert text.count("exited with") == 2, text
    assert [name for name, pid in pids.items() if running_service(pid)] == []
