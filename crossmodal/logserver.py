"""Local NATS JetStream servers for the write log: one node, or a cluster of nodes on loopback.

`crossmodal up` and the tests start the log with these; in Kubernetes the Helm chart runs a JetStream
StatefulSet instead. The binary is Debian's `nats-server` (`make test` installs it). Ports are chosen by
the server itself (`-1`) and read back from its ports file, so nothing races for a free port; cluster
routes are the one exception and are picked just before start. A restarted server keeps its ports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NATS_SERVER = "nats-server"


class LogServerError(RuntimeError):
    """A NATS server did not start; the message quotes its log."""


def nats_server_binary() -> str:
    """The nats-server executable, or a LogServerError saying how to install it."""
    found = shutil.which(NATS_SERVER) or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise LogServerError("nats-server is not installed: `apt-get install nats-server` (Debian) or see nats.io")
    return found


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LogServer:
    """One nats-server with JetStream, its store and log under `data_dir`."""

    data_dir: Path
    name: str = "nats-0"
    host: str = "127.0.0.1"
    cluster_name: str = ""
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    monitor_port: int = 0

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the server logs."""
        return self.data_dir / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> LogServer:
        """Start the server and wait until it listens; raises LogServerError with its log otherwise."""
        self.data_dir = self.data_dir.resolve()
        store = self.data_dir / self.name
        ports_dir = self.data_dir / f"{self.name}.ports"
        store.mkdir(parents=True, exist_ok=True)
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        args = [
            nats_server_binary(),
            "--jetstream",
            "--store_dir",
            str(store),
            "--server_name",
            self.name,
            "--addr",
            self.host,
            # A first start lets the server pick free ports; a restart keeps them, so every client's URL holds.
            "--port",
            str(self.port or -1),
            "--http_port",
            str(self.monitor_port or -1),
            "--ports_file_dir",
            str(ports_dir),
        ]
        if self.cluster_name:
            args += [
                "--cluster_name",
                self.cluster_name,
                "--cluster",
                f"nats://{self.host}:{self.cluster_port}",
                "--routes",
                ",".join(self.routes),
            ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed when we drop the handle
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LogServerError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            files = list(ports_dir.glob("*.ports"))
            if files:
                ports = json.loads(files[0].read_text())
                self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise LogServerError(f"{self.name} did not start within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9 the server (a crash) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class LogCluster:
    """`size` JetStream nodes routed to each other on loopback (use stream replicas = size for raft)."""

    data_dir: Path
    size: int = 3
    host: str = "127.0.0.1"
    nodes: list[LogServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The client URLs of every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30.0) -> LogCluster:
        """Start every node; each solicits routes to all the others."""
        cluster_ports = [_free_port(self.host) for _ in range(self.size)]
        routes = [f"nats://{self.host}:{p}" for p in cluster_ports]
        self.nodes = [
            LogServer(
                self.data_dir,
                name=f"nats-{n}",
                host=self.host,
                cluster_name="crossmodal",
                cluster_port=cluster_ports[n],
                routes=[r for i, r in enumerate(routes) if i != n],
            )
            for n in range(self.size)
        ]
        try:
            for node in self.nodes:
                node.start(timeout)
        except LogServerError:
            self.stop()
            raise
        return self

    def restart(self, node: LogServer, timeout: float = 30.0) -> None:
        """Start a stopped or killed node again on its ports and store."""
        node.start(timeout)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
