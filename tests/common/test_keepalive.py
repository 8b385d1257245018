"""Idle connections survive the services' own keepalive pings (no GOAWAY too_many_pings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Clients ping every 20 s; a server on gRPC's default policy sends GOAWAY after the third ping that
# comes sooner than 5 minutes after the last (about 60 s), so 65 s idle shows the difference.
IDLE_SECONDS = 65


def test_idle_channels_are_not_sent_away_for_pinging() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.common.keepalive_probe", str(IDLE_SECONDS)],
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
