"""A local crossmodal cluster as processes: encoders, N shards x R replicas and a gateway.

Used by `crossmodal up`, `make demo`, the end-to-end tests and the benchmarks. Every process gets its
own log file and ready file under the data directory; start() returns once all of them are SERVING.
The fault tests use kill() (SIGKILL, as a crash) and restart(), which brings a process back on the same
port with the same environment and data, so the gateway's configured addresses stay valid.

The processes are started by module name (`python -m services.<name>`), so this module never imports the
services. They run in the data directory, not in the caller's: every path they are given (data, logs,
ready files, bundle, and any `CROSSMODAL_*_FILE`, `*_DIR` or `*_BUNDLE` setting: TLS material, API keys)
is made absolute first, against the caller's working directory, which is where a relative path meant it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
# Text encoders after the first take metrics ports base+3 ... base+8; the shards' start at base+10.
MAX_TEXT_ENCODERS = 7
# Settings that name a file or directory: a relative value would be read against the child's working
# directory, which is not the one the caller meant.
_PATH_SUFFIXES = ("_FILE", "_DIR", "_BUNDLE")


def absolute_paths(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with every non-empty CROSSMODAL_* path setting made absolute against the current directory."""
    return {
        name: str(Path(value).resolve())
        if value and name.startswith("CROSSMODAL_") and name.endswith(_PATH_SUFFIXES)
        else value
        for name, value in env.items()
    }


class ClusterError(RuntimeError):
    """A process of the cluster failed to start; the message names it and quotes its log."""


@dataclass
class ClusterProcess:
    """One process of the cluster."""

    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    ready_file: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    metrics_port: int = 0

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return f"127.0.0.1:{self.port}"

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ClusterSpec:
    """What to start and where."""

    data_dir: Path
    shards: int = 2
    replicas: int = 1
    bundle: Path = DEFAULT_BUNDLE
    precision: str = "fp32"
    host: str = "127.0.0.1"
    gateway_port: int = 50051
    text_encoder_port: int = 50052
    image_encoder_port: int = 50053
    index_base_port: int = 50060
    metrics_base_port: int = 9100
    env: dict[str, str] = field(default_factory=dict)
    gateway_env: dict[str, str] = field(default_factory=dict)
    # More than one gives the gateway addresses to fail over between; those after the first use free ports.
    text_encoders: int = 1

    @classmethod
    def on_free_ports(cls, data_dir: Path, **fields: Any) -> ClusterSpec:
        """A spec whose processes all bind free loopback ports (port 0), as tests and benchmarks need."""
        free = {
            "gateway_port": 0,
            "text_encoder_port": 0,
            "image_encoder_port": 0,
            "index_base_port": 0,
            "metrics_base_port": 0,
        }
        return cls(data_dir=data_dir, **{**free, **fields})


class LocalCluster:
    """Starts and stops the processes of a local cluster."""

    def __init__(self, spec: ClusterSpec, say: Callable[[str], None] = lambda _m: None) -> None:
        # Resolved once, here: a later chdir of the caller must not move the cluster's files.
        self.spec = dataclasses.replace(
            spec,
            data_dir=spec.data_dir.resolve(),
            bundle=spec.bundle.resolve(),
            env=absolute_paths(spec.env),
            gateway_env=absolute_paths(spec.gateway_env),
        )
        self.say = say
        self.processes: list[ClusterProcess] = []
        self.gateway: ClusterProcess | None = None

    def _process(self, name: str, module: str, port: int, metrics_port: int, env: Mapping[str, str]) -> ClusterProcess:
        spec = self.spec
        logs = spec.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        ready = logs / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        python_path = [
            str(REPO_ROOT),
            *(str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p),
        ]
        full = {
            **absolute_paths(os.environ),
            "PYTHONPATH": os.pathsep.join(python_path),
            "CROSSMODAL_HOST": spec.host,
            "CROSSMODAL_PORT": str(port),
            "CROSSMODAL_METRICS_PORT": str(metrics_port),
            "CROSSMODAL_LOG_FORMAT": "json",
            "CROSSMODAL_READY_FILE": str(ready),
            **spec.env,
            **env,
        }
        return ClusterProcess(name, module, full, logs / f"{name}.log", ready)

    def _launch(self, process: ClusterProcess) -> None:
        process.ready_file.unlink(missing_ok=True)
        with open(process.log_path, "ab") as log:
            process.proc = subprocess.Popen(
                [sys.executable, "-m", process.module],
                # Not the repository: whatever a service writes to a relative path stays with the cluster's data.
                cwd=self.spec.data_dir,
                env=process.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if process not in self.processes:
            self.processes.append(process)

    def _wait_ready(self, processes: list[ClusterProcess], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(processes)
        while waiting:
            for process in list(waiting):
                assert process.proc is not None
                if process.proc.poll() is not None:
                    raise ClusterError(
                        f"{process.name} exited with status {process.proc.returncode}; its log "
                        f"({process.log_path}) ends with:\n{process.tail()}"
                    )
                if process.ready_file.exists():
                    info = json.loads(process.ready_file.read_text())
                    process.port, process.metrics_port = int(info["port"]), int(info["metrics_port"])
                    waiting.remove(process)
                    self.say(f"  {process.name:<16} SERVING on {process.address} (metrics :{process.metrics_port})")
            if waiting and time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise ClusterError(
                    f"{names} did not become ready within {timeout:.0f}s; the log of {waiting[0].name} "
                    f"({waiting[0].log_path}) ends with:\n{waiting[0].tail()}"
                )
            time.sleep(0.05)

    def _port(self, base: int, offset: int) -> int:
        return 0 if base == 0 else base + offset

    def start(self, timeout: float = 180.0) -> LocalCluster:
        """Start encoders and shards, then the gateway once they are SERVING."""
        spec = self.spec
        if not (spec.bundle / "model.json").is_file():
            raise ClusterError(f"no model bundle at {spec.bundle} (model.json missing)")
        if not 1 <= spec.text_encoders <= MAX_TEXT_ENCODERS:
            raise ClusterError(f"text_encoders must be 1-{MAX_TEXT_ENCODERS}, not {spec.text_encoders}")
        mbase = spec.metrics_base_port
        encoder_env = {"CROSSMODAL_ENCODER_BUNDLE": str(spec.bundle), "CROSSMODAL_ENCODER_PRECISION": spec.precision}
        text_encoders = [
            self._process(
                "encoder_text" if n == 0 else f"encoder_text-{n}",
                "services.encoder_text",
                spec.text_encoder_port if n == 0 else 0,
                self._port(mbase, 1 if n == 0 else 2 + n),
                encoder_env,
            )
            for n in range(spec.text_encoders)
        ]
        image_encoder = self._process(
            "encoder_image", "services.encoder_image", spec.image_encoder_port, self._port(mbase, 2), encoder_env
        )
        backends = [*text_encoders, image_encoder]
        shard_map: list[list[ClusterProcess]] = []
        for shard in range(spec.shards):
            replicas = []
            for replica in range(spec.replicas):
                offset = shard * spec.replicas + replica
                replicas.append(
                    self._process(
                        f"index-{shard}-{replica}",
                        "services.index",
                        self._port(spec.index_base_port, offset),
                        self._port(mbase, 10 + offset),
                        {
                            "CROSSMODAL_INDEX_DATA_DIR": str(spec.data_dir / "index" / f"replica-{replica}"),
                            "CROSSMODAL_INDEX_SHARDS": str(shard),
                        },
                    )
                )
            shard_map.append(replicas)
            backends.extend(replicas)
        try:
            for process in backends:
                self._launch(process)
            self._wait_ready(backends, timeout)
            shards = ";".join(",".join(r.address for r in replicas) for replicas in shard_map)
            self.gateway = self._process(
                "gateway",
                "services.gateway",
                spec.gateway_port,
                self._port(mbase, 0),
                {
                    "CROSSMODAL_GATEWAY_TEXT_ENCODERS": ",".join(p.address for p in text_encoders),
                    "CROSSMODAL_GATEWAY_IMAGE_ENCODERS": image_encoder.address,
                    "CROSSMODAL_GATEWAY_SHARDS": shards,
                    **spec.gateway_env,
                },
            )
            self._launch(self.gateway)
            self._wait_ready([self.gateway], timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def address(self) -> str:
        """The gateway's address."""
        assert self.gateway is not None, "the cluster is not started"
        return self.gateway.address

    def by_name(self, name: str) -> ClusterProcess:
        """The process called `name` (e.g. 'index-1-0')."""
        return next(p for p in self.processes if p.name == name)

    def kill(self, name: str) -> int:
        """kill -9 the process called `name` (a crash: no drain, no flush) and reap it; its exit status."""
        process = self.by_name(name)
        if process.proc is None:
            raise ClusterError(f"{name} was never started")
        if process.proc.poll() is None:
            # Each process leads its own session, so the group also takes any child it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.proc.pid, signal.SIGKILL)
        return process.proc.wait(30)

    def restart(self, name: str, timeout: float = 120.0) -> ClusterProcess:
        """Start a stopped or killed process again on the same port, env and data; return once it is SERVING.

        The port is the one it had, even when it was first given a free one, so every address the
        gateway was configured with stays valid; a process that still runs is killed first.
        """
        process = self.by_name(name)
        if process.proc is not None and process.proc.poll() is None:
            self.kill(name)
        if process.port:
            process.env["CROSSMODAL_PORT"] = str(process.port)
        self.say(f"  {name:<16} restarting on {process.address}")
        self._launch(process)
        self._wait_ready([process], timeout)
        return process

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every process (gateway first), wait for them, kill what is left."""
        for process in reversed(self.processes):
            if process.proc is not None and process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            if process.proc is None:
                continue
            try:
                process.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.proc.pid, signal.SIGKILL)
                process.proc.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
