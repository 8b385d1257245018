"""A local crossmodal cluster as processes: the write log, encoders, N shards x R replicas and a gateway.

The encoders follow the bundle's manifest: a text encoder always, an image encoder when the bundle has an
image tower, and an audio encoder when it has an audio tower (unless `ClusterSpec.audio` is off, for those
who do not want to pay its memory). The gateway is given an empty address list for a tower that runs no
encoder: with no audio encoder it refuses audio requests, saying so.

Used by `crossmodal up`, `make demo`, the end-to-end tests and the benchmarks. Every process gets its
own log file and ready file under the data directory; start() returns once all of them are SERVING.
The fault tests use kill() (SIGKILL, as a crash) and restart(), which brings a process back on the same
ports with the same environment and data, so the gateway's configured addresses stay valid. With a write
log, add_shards() grows a running cluster by shard processes that own nothing until `crossmodal reshard`
moves partitions to them (starting a cluster with more shards than its partition map uses does the same).

The write log (`ClusterSpec.log`): with more than one replica per shard the gateway needs one, so by
default a cluster with replicas > 1 first starts a local NATS JetStream server (crossmodal.logserver) with
its store under `<data-dir>/log/`, and hands its URL to the gateway and every index process; a later
start on the same data directory finds the same stream and data there. "cluster" starts three routed
nodes and asks the gateway for three stream replicas. The log starts first and stops last, so no
process ever runs without it. With a log the start order changes: an index replica turns SERVING only
once it caught up with the log's stream, which the gateway creates, so the gateway starts as soon as
the encoders are SERVING, and shards on free ports get their ports picked here, before they start.

With `http_port` set, an HTTP/JSON service (services.http) starts last, in front of the gateway, and
serves the search page; it may read files only under `media_roots`.

Supervision is opt-in (`supervise=True`, what `crossmodal up` does): a thread restarts any process that
exits, on its ports and data, after a back-off that doubles from 0.5 s to 30 s and starts again from
0.5 s once a process stayed up a minute. Tests leave it off, because they kill processes on purpose and
decide themselves when those come back.

The processes are started by module name (`python -m services.<name>`), so this module never imports the
services. They run in the data directory, not in the caller's: every path they are given (data, logs,
ready files, bundle, and any `CROSSMODAL_*_FILE`, `*_DIR` or `*_BUNDLE` setting: TLS material, API keys)
is made absolute first, against the caller's working directory, which is where a relative path meant it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal.logserver import LogCluster, LogServer, LogServerError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
# Metrics ports from metrics_base_port: the gateway +0, the text encoder +1, the image encoder +2, the text
# encoders after the first +3 ... +7, the audio encoder +8, the HTTP service +9, the shards from +10 on.
MAX_TEXT_ENCODERS = 6
AUDIO_METRICS_OFFSET = 8
# Settings that name a file or directory: a relative value would be read against the child's working
# directory, which is not the one the caller meant.
_PATH_SUFFIXES = ("_FILE", "_DIR", "_BUNDLE")
# The write log a cluster starts: none, one JetStream server, or three routed ones.
LOG_MODES = ("none", "single", "cluster")
LOG_CLUSTER_SIZE = 3


def absolute_paths(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with every non-empty CROSSMODAL_* path setting made absolute against the current directory."""
    return {
        name: str(Path(value).resolve())
        if value and name.startswith("CROSSMODAL_") and name.endswith(_PATH_SUFFIXES)
        else value
        for name, value in env.items()
    }


def _free_port(host: str) -> int:
    """A port free on `host` now (the caller binds it moments later; see where it is used for why)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _shards_setting(shard_map: Sequence[Sequence[ClusterProcess]]) -> str:
    """CROSSMODAL_GATEWAY_SHARDS for these index processes: replicas comma-separated, shards semicolon-separated."""
    return ";".join(",".join(replica.address for replica in replicas) for replicas in shard_map)


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
    # The audio encoder's port; it runs only when the bundle has an audio tower and `audio` is on.
    audio_encoder_port: int = 50055
    index_base_port: int = 50060
    metrics_base_port: int = 9100
    env: dict[str, str] = field(default_factory=dict)
    gateway_env: dict[str, str] = field(default_factory=dict)
    # More than one gives the gateway addresses to fail over between; those after the first use free ports.
    text_encoders: int = 1
    # Start the audio encoder when the bundle has an audio tower; off, the cluster serves no audio.
    audio: bool = True
    # One of LOG_MODES; empty: "single" when replicas > 1 (the gateway refuses replicas without a log), else "none".
    log: str = ""
    # The HTTP/JSON service and search page (services.http) in front of the gateway: its port (0: a free one),
    # or None to start none. It serves thumbnails and media only of files under `media_roots`.
    http_port: int | None = None
    media_roots: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.log:
            self.log = "single" if self.replicas > 1 else "none"
        if self.log not in LOG_MODES:
            raise ValueError(f"log must be one of {', '.join(LOG_MODES)}, not {self.log!r}")

    @classmethod
    def on_free_ports(cls, data_dir: Path, **fields: Any) -> ClusterSpec:
        """A spec whose processes all bind free loopback ports (port 0), as tests and benchmarks need."""
        free = {
            "gateway_port": 0,
            "text_encoder_port": 0,
            "image_encoder_port": 0,
            "audio_encoder_port": 0,
            "index_base_port": 0,
            "metrics_base_port": 0,
        }
        return cls(data_dir=data_dir, **{**free, **fields})


# Supervision: how often exits are looked for, and the back-off between restarts of one process.
SUPERVISE_POLL_SECONDS = 0.1
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A process that stayed up this long is healthy again: its next failure waits BACKOFF_INITIAL_SECONDS.
BACKOFF_RESET_SECONDS = 60.0


@dataclass
class _Restarts:
    """The supervisor's record of one process: restarts so far, the next back-off, and what it waits for."""

    started: float
    count: int = 0
    delay: float = BACKOFF_INITIAL_SECONDS
    due: float | None = None  # set while the process is down: when to start it again
    waiting_ready: bool = False


class LocalCluster:
    """Starts and stops the processes of a local cluster (and restarts the ones that die, with `supervise`)."""

    def __init__(
        self, spec: ClusterSpec, say: Callable[[str], None] = lambda _m: None, *, supervise: bool = False
    ) -> None:
        # Resolved once, here: a later chdir of the caller must not move the cluster's files.
        self.spec = dataclasses.replace(
            spec,
            data_dir=spec.data_dir.resolve(),
            bundle=spec.bundle.resolve(),
            media_roots=tuple(Path(root).resolve() for root in spec.media_roots),
            env=absolute_paths(spec.env),
            gateway_env=absolute_paths(spec.gateway_env),
        )
        self.say = say
        self.supervise = supervise
        self.processes: list[ClusterProcess] = []
        self.gateway: ClusterProcess | None = None
        self.http: ClusterProcess | None = None
        # The encoder of each tower the cluster runs, by tower ("text" is the first text encoder).
        self.encoders: dict[str, ClusterProcess] = {}
        self.log: LogServer | LogCluster | None = None
        self._stopping = threading.Event()
        # Held while the supervisor starts a process, so stop() never races a restart.
        self._launching = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._restarts: dict[str, _Restarts] = {}

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
        return ClusterProcess(name, module, full, logs / f"{name}.log", ready, port=port)

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

    @staticmethod
    def _pin_ports(process: ClusterProcess) -> None:
        """Make a relaunch bind the ports the process had, even those it was first given free (port 0)."""
        if process.port:
            process.env["CROSSMODAL_PORT"] = str(process.port)
        if process.metrics_port > 0:
            process.env["CROSSMODAL_METRICS_PORT"] = str(process.metrics_port)

    @staticmethod
    def _read_ready(process: ClusterProcess) -> bool:
        """Whether the process wrote its ready file; if so, take its ports from it."""
        if not process.ready_file.exists():
            return False
        info = json.loads(process.ready_file.read_text())
        process.port, process.metrics_port = int(info["port"]), int(info["metrics_port"])
        return True

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
                if self._read_ready(process):
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

    # --- the write log ----------------------------------------------------------------------------------

    @property
    def log_nodes(self) -> list[LogServer]:
        """The NATS servers of the write log (none without one)."""
        if self.log is None:
            return []
        return self.log.nodes if isinstance(self.log, LogCluster) else [self.log]

    def _start_log(self) -> None:
        """Start the write log the spec asks for, under <data-dir>/log/ (a store that is there is reused)."""
        mode = self.spec.log
        if mode == "none":
            return
        where = self.spec.data_dir / "log"
        where.mkdir(parents=True, exist_ok=True)
        # The single server has a name of its own: a store made by a standalone server must not be
        # picked up by a node of a 3-node cluster, whose streams are raft groups.
        self.log = LogServer(where, name="nats") if mode == "single" else LogCluster(where, size=LOG_CLUSTER_SIZE)
        try:
            self.log.start()
        except LogServerError as exc:
            raise ClusterError(f"the write log ({mode}) did not start: {exc}") from exc
        for node in self.log_nodes:
            self.say(f"  {node.name:<16} JetStream on {node.url} (monitoring :{node.monitor_port}; {node.log_path})")

    def _log_env(self, *, gateway: bool) -> dict[str, str]:
        """What the gateway or an index process must know about the write log."""
        if self.log is None:
            return {}
        env = {"CROSSMODAL_LOG_URL": self.log.url}
        if gateway and isinstance(self.log, LogCluster):
            # A stream replica on every node: a write is acknowledged once two of the three stored it.
            env["CROSSMODAL_GATEWAY_LOG_REPLICAS"] = str(len(self.log.nodes))
        return env

    def _log_node(self, node: int) -> LogServer:
        nodes = self.log_nodes
        if not 0 <= node < len(nodes):
            raise ClusterError(f"the write log has {len(nodes)} node(s), no node {node}")
        return nodes[node]

    def kill_log(self, node: int = 0) -> None:
        """kill -9 a node of the write log (a crash)."""
        self._log_node(node).kill()

    def restart_log(self, node: int = 0) -> LogServer:
        """Start a stopped or killed node of the write log again on its store (and cluster port)."""
        server = self._log_node(node)
        server.kill()
        server.start()
        return server

    # --- life cycle ------------------------------------------------------------------------------------

    def towers(self) -> tuple[str, ...]:
        """The towers whose encoders this cluster runs: the bundle's, less audio when `spec.audio` is off."""
        # Imported here: the bundle package loads onnxruntime, which only the start of a cluster needs.
        from crossmodal.bundle import BundleError, Manifest

        try:
            towers = Manifest.load(self.spec.bundle).towers
        except BundleError as exc:
            raise ClusterError(f"cannot start on the model bundle at {self.spec.bundle}: {exc}") from exc
        served = tuple(t for t in towers if t != "audio" or self.spec.audio)
        if served == ("text",):
            raise ClusterError(
                f"the bundle at {self.spec.bundle} has no image tower, and the audio encoder is left off "
                "(--no-audio): a cluster needs a tower besides text; start it with the audio encoder"
            )
        return served

    def start(self, timeout: float = 180.0) -> LocalCluster:
        """Start the write log, then encoders and shards, then the gateway once they are SERVING."""
        spec = self.spec
        if not (spec.bundle / "model.json").is_file():
            raise ClusterError(f"no model bundle at {spec.bundle} (model.json missing)")
        if not 1 <= spec.text_encoders <= MAX_TEXT_ENCODERS:
            raise ClusterError(f"text_encoders must be 1-{MAX_TEXT_ENCODERS}, not {spec.text_encoders}")
        towers = self.towers()
        try:
            self._start_log()
            mbase = spec.metrics_base_port
            encoder_env = {
                "CROSSMODAL_ENCODER_BUNDLE": str(spec.bundle),
                "CROSSMODAL_ENCODER_PRECISION": spec.precision,
            }
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
            # One encoder per other tower the bundle has: (port, metrics port offset) of each.
            others = {"image": (spec.image_encoder_port, 2), "audio": (spec.audio_encoder_port, AUDIO_METRICS_OFFSET)}
            self.encoders = {"text": text_encoders[0]}
            for tower, (port, offset) in others.items():
                if tower in towers:
                    self.encoders[tower] = self._process(
                        f"encoder_{tower}", f"services.encoder_{tower}", port, self._port(mbase, offset), encoder_env
                    )
            encoders = [*text_encoders, *(p for t, p in self.encoders.items() if t != "text")]
            backends = list(encoders)
            shard_map: list[list[ClusterProcess]] = []
            for shard in range(spec.shards):
                replicas = [self._index_process(shard, replica) for replica in range(spec.replicas)]
                shard_map.append(replicas)
                backends.extend(replicas)
            for process in backends:
                self._launch(process)
            index = [p for p in backends if p not in encoders]
            if self.log is None:
                self._wait_ready(backends, timeout)
            else:
                # An index replica that follows a log turns SERVING only once it caught up with the log's
                # stream, which the gateway creates: so the gateway starts without waiting for the shards,
                # dialling the ports chosen for them above.
                self._wait_ready(encoders, timeout)
            shards = _shards_setting(shard_map)
            self.gateway = self._process(
                "gateway",
                "services.gateway",
                spec.gateway_port,
                self._port(mbase, 0),
                {
                    **self._log_env(gateway=True),
                    "CROSSMODAL_GATEWAY_TEXT_ENCODERS": ",".join(p.address for p in text_encoders),
                    # Empty for a tower that runs no encoder: the gateway refuses its modality then.
                    "CROSSMODAL_GATEWAY_IMAGE_ENCODERS": self._encoder_address("image"),
                    "CROSSMODAL_GATEWAY_AUDIO_ENCODERS": self._encoder_address("audio"),
                    "CROSSMODAL_GATEWAY_SHARDS": shards,
                    **spec.gateway_env,
                },
            )
            self._launch(self.gateway)
            self._wait_ready([self.gateway] if self.log is None else [*index, self.gateway], timeout)
            if spec.http_port is not None:
                self._start_http(timeout)
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="crossmodal-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def _index_process(self, shard: int, replica: int) -> ClusterProcess:
        """The process of one replica of one shard (not started)."""
        spec = self.spec
        offset = shard * spec.replicas + replica
        port = self._port(spec.index_base_port, offset)
        if port == 0 and self.log is not None:
            # The gateway must be given this address before the replica is SERVING (see start()).
            port = _free_port(spec.host)
        return self._process(
            f"index-{shard}-{replica}",
            "services.index",
            port,
            self._port(spec.metrics_base_port, 10 + offset),
            {
                **self._log_env(gateway=False),
                "CROSSMODAL_INDEX_DATA_DIR": str(spec.data_dir / "index" / f"replica-{replica}"),
                "CROSSMODAL_INDEX_SHARDS": str(shard),
            },
        )

    def add_shards(self, shards: int, timeout: float = 120.0) -> None:
        """Grow a running cluster with a write log to `shards` shard processes, then restart the gateway on them.

        The new shards start empty and own nothing until `crossmodal reshard --shards N` moves partitions to
        them; the gateway is restarted (on its port) because its shard addresses are fixed at start.
        """
        spec = self.spec
        if self.log is None:
            raise ClusterError("adding shards needs the write log (resharding replays partitions from it)")
        if shards <= spec.shards:
            raise ClusterError(f"the cluster already has {spec.shards} shards")
        added = [self._index_process(n, r) for n in range(spec.shards, shards) for r in range(spec.replicas)]
        for process in added:
            self._launch(process)
        self._wait_ready(added, timeout)
        spec.shards = shards
        gateway = self.by_name("gateway")
        index = [p for p in self.processes if p.module == "services.index"]
        by_shard = [[p for p in index if p.name.startswith(f"index-{n}-")] for n in range(shards)]
        gateway.env["CROSSMODAL_GATEWAY_SHARDS"] = _shards_setting(by_shard)
        self.restart("gateway", timeout)

    def _start_http(self, timeout: float) -> None:
        """Start the HTTP service in front of the gateway; it is ready once the gateway answers SERVING."""
        spec = self.spec
        self.http = self._process(
            "http",
            "services.http",
            spec.http_port or 0,
            self._port(spec.metrics_base_port, 9),
            {
                "CROSSMODAL_HTTP_GATEWAY": self.address,
                "CROSSMODAL_HTTP_MEDIA_ROOTS": ",".join(str(root) for root in spec.media_roots),
            },
        )
        self._launch(self.http)
        self._wait_ready([self.http], timeout)

    def _encoder_address(self, tower: str) -> str:
        """host:port of the tower's encoder, or "" when the cluster runs none."""
        process = self.encoders.get(tower)
        return "" if process is None else process.address

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP service and search page."""
        assert self.http is not None, "the cluster runs no HTTP service"
        return f"http://{self.http.address}"

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
        """Start a stopped or killed process again on the same ports, env and data; return once it is SERVING.

        The ports are the ones it had, even when it was first given free ones, so every address the
        gateway was configured with stays valid; a process that still runs is killed first.
        """
        process = self.by_name(name)
        if process.proc is not None and process.proc.poll() is None:
            self.kill(name)
        self._pin_ports(process)
        self.say(f"  {name:<16} restarting on {process.address}")
        self._launch(process)
        self._wait_ready([process], timeout)
        return process

    # --- supervision -----------------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Restart whatever exits until stop(); runs in the supervisor thread."""
        started = time.monotonic()
        for name in [p.name for p in self.processes] + [n.name for n in self.log_nodes]:
            self._restarts[name] = _Restarts(started)
        while not self._stopping.wait(SUPERVISE_POLL_SECONDS):
            try:
                for process in list(self.processes):
                    self._look_after(process.name, process.proc, functools.partial(self._relaunch, process), process)
                for node in self.log_nodes:
                    self._look_after(node.name, node.proc, functools.partial(self._restart_node, node), None)
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any one failure, and say it
                self.say(f"supervisor: {exc!r}")

    def _relaunch(self, process: ClusterProcess) -> None:
        self._pin_ports(process)
        self._launch(process)

    def _restart_node(self, node: LogServer) -> None:
        node.start()  # on the ports it had: the gateway and the index processes keep its address
        self.say(f"{node.name} is listening again on {node.url}")

    def _look_after(
        self,
        name: str,
        proc: subprocess.Popen[bytes] | None,
        relaunch: Callable[[], object],
        process: ClusterProcess | None,
    ) -> None:
        """One supervision step for one process: note an exit, restart it when its back-off is over."""
        state = self._restarts.setdefault(name, _Restarts(time.monotonic()))
        now = time.monotonic()
        returncode = None if proc is None else proc.poll()
        if proc is not None and returncode is None:
            if state.waiting_ready and process is not None and self._read_ready(process):
                state.waiting_ready = False
                self.say(f"{name} is SERVING again on {process.address}")
            return
        if state.due is None:
            if now - state.started >= BACKOFF_RESET_SECONDS:
                state.delay = BACKOFF_INITIAL_SECONDS
            state.count += 1
            state.due = now + state.delay
            self.say(f"{name} exited with {returncode}; restarting in {state.delay:g} s (restart {state.count})")
            state.delay = min(state.delay * 2, BACKOFF_MAX_SECONDS)
            return
        if now < state.due:
            return
        with self._launching:
            if self._stopping.is_set():
                return
            state.due, state.started = None, time.monotonic()
            try:
                relaunch()
            except Exception as exc:  # noqa: BLE001 - counted as one more exit: retried after a longer back-off
                self.say(f"{name} could not be restarted: {exc}")
                return
        state.waiting_ready = process is not None

    def stop(self, grace: float = 30.0) -> None:
        """Stop supervising, SIGTERM every process (gateway first), wait for them, kill what is left, stop the log."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(60)
        # A restart the supervisor had begun has finished (or none will begin): every process is in the list.
        with self._launching:
            pass
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
        # Last: the processes flushed and stopped while they could still reach it.
        if self.log is not None:
            self.log.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
