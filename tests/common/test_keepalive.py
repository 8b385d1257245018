"""Idle connections survive the services' own keepalive pings (no GOAWAY too_many_pings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from services.common.channels import KEEPALIVE_TIME_MS, channel_options, server_options

ROOT = Path(__file__).resolve().parents[2]
# The probe runs the real options with the ping intervals divided by 10: clients ping every 2 s, our
# servers accept one per second, gRPC's default wants 5 minutes and sends GOAWAY after its
# third early ping (about 6 s); 20 s idle is ten client pings, far past that even on a busy machine.
FACTOR = 10
IDLE_SECONDS = 20


def test_servers_accept_pings_at_the_clients_keepalive_rate() -> None:
    client = dict(channel_options(1 << 20))
    server = dict(server_options(1 << 20))
    assert client["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS
    assert client["grpc.keepalive_permit_without_calls"] == 1 and client["grpc.http2.max_pings_without_data"] == 0
    # Half the client's interval leaves room for timer jitter on a loaded node.
    assert server["grpc.http2.min_ping_interval_without_data_ms"] * 2 <= client["grpc.keepalive_time_ms"]


def test_idle_channels_are_not_sent_away_for_pinging() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.common.keepalive_probe", str(IDLE_SECONDS), str(FACTOR)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=IDLE_SECONDS + 60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    ports = dict(re.findall(r"^(\w+) port (\d+)$", run.stdout, re.M))
    states = dict(re.findall(r"^(\w+) state (\w+)$", run.stdout, re.M))
    goaways = {name for name, port in ports.items() if re.search(rf":{port}:.*too_many_pings", run.stderr)}
    # The control shows the probe detects the failure: gRPC's default server policy drops the connection.
    assert "default" in goaways and states["default"] != "READY", (states, run.stderr[-2000:])
    # The services' servers accept the pings and the idle connection is still up.
    assert "services" not in goaways and states["services"] == "READY", (states, run.stderr[-2000:])
