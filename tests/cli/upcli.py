"""Running `crossmodal up` as a user does, and looking at the processes it started (tests of tests/cli)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import wait_for

CONSOLE_SCRIPT = Path(sys.executable).with_name("crossmodal")
FREE_PORTS = ["--encoder-ports", "0", "0", "--index-base-port", "0", "--metrics-base-port", "0"]


def start_up(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
    """Start `crossmodal up` in `cwd` with its output in a file there; the process and that file."""
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "crossmodal.cli"]
    output = cwd / "up.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [*command, "up", *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return proc, output


def wait_reported(up: subprocess.Popen[str], output: Path, pattern: str, what: str) -> str:
    """Wait until `up` prints a line matching `pattern` (failing if it exits first); the pattern's group 1."""
    found = wait_for(lambda: re.search(pattern, output.read_text()) or up.poll() is not None, 180, what, interval=0.1)
    assert up.poll() is None, output.read_text()
    return str(found.group(1))


def ready_info(logs: Path) -> dict[str, dict[str, int]]:
    """What each child that became SERVING wrote into its ready file: port, metrics_port, pid."""
    out = {}
    for path in logs.glob("*.ready.json"):
        # The supervisor removes a child's ready file before it restarts it, so one listed may be gone.
        with contextlib.suppress(FileNotFoundError):
            out[path.name.removesuffix(".ready.json")] = json.loads(path.read_text())
    return out


def service_pids(logs: Path) -> dict[str, int]:
    """The pid each child that became SERVING wrote into its ready file."""
    return {name: int(info["pid"]) for name, info in ready_info(logs).items()}


def _cmdline(pid: int) -> list[bytes] | None:
    """The arguments of a live (not zombie) process, or None."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if state == "Z" else cmdline


def running_service(pid: int) -> bool:
    """Whether `pid` is still a crossmodal service process (not a later process that reused the number)."""
    cmdline = _cmdline(pid)
    return cmdline is not None and any(arg.startswith(b"services.") for arg in cmdline)


def nats_servers(store_root: Path) -> list[int]:
    """Live nats-server processes whose store lies under `store_root` (so: started for that data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmdline = _cmdline(int(entry.name))
        if cmdline and cmdline[0].endswith(b"nats-server") and any(str(store_root).encode() in a for a in cmdline):
            found.append(int(entry.name))
    return sorted(found)


def environment(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def without_audio_tower(source: Path, out: Path) -> Path:
    """A copy of the bundle at `source` with its audio tower taken out of the manifest and the files."""
    shutil.copytree(source, out)
    data = json.loads((out / "model.json").read_text())
    data.pop("audio", None)
    for variant in data["variants"].values():
        name = variant.pop("audio", None)
        if name is not None:
            data["files"].pop(name, None)
            (out / name).unlink(missing_ok=True)
    (out / "model.json").write_text(json.dumps(data))
    return out
