"""Helpers for tests that run services as real subprocesses on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from crossmodal.v1 import index_pb2, index_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {message}")
        time.sleep(interval)


class ServiceProcess:
    """A crossmodal service started as `python -m <module>` on free ports, with its log captured."""

    def __init__(self, module: str, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.module = module
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file = workdir / f"{module.rsplit('.', 1)[-1]}.ready.json"
        self.ready_file.unlink(missing_ok=True)
        self.log_path = workdir / f"{module.rsplit('.', 1)[-1]}.log"
        full_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CROSSMODAL_HOST": "127.0.0.1",
            "CROSSMODAL_PORT": "0",
            "CROSSMODAL_METRICS_PORT": "0",
            "CROSSMODAL_LOG_FORMAT": "json",
            "CROSSMODAL_READY_FILE": str(self.ready_file),
            **(env or {}),
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.port = 0
        self.metrics_port = 0

    @property
    def address(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> ServiceProcess:
        """Wait until the service wrote its ready file (it is SERVING); fail early if it exits."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.module} exited with {self.proc.returncode}:\n{self.log()}")
            return self.ready_file.exists()

        wait_for(ready, timeout, f"{self.module} to become ready")
        info = json.loads(self.ready_file.read_text())
        self.port, self.metrics_port = int(info["port"]), int(info["metrics_port"])
        return self

    def log(self) -> str:
        """Everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        """A blocking channel to the service."""
        return grpc.insecure_channel(self.address)

    def metrics(self) -> str:
        """The text of its /metrics endpoint."""
        return metrics_text(self.metrics_port)

    def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> int:
        """kill -9 the process and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(30)
        self._log.close()
        return rc

    def close(self) -> None:
        """Stop the process if it still runs (for fixture teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if not self._log.closed:
            self._log.close()


def up_command(data_dir: Path, bundle: Path, shards: int = 2, replicas: int = 1, restart: bool = True) -> list[str]:
    """The `crossmodal up` command line for a local cluster on free loopback ports."""
    return [
        sys.executable,
        "-m",
        "crossmodal",
        "up",
        "--data-dir",
        str(data_dir),
        "--bundle",
        str(bundle),
        "--shards",
        str(shards),
        "--replicas",
        str(replicas),
        "--port",
        "0",
        "--encoder-ports",
        "0",
        "0",
        "--index-base-port",
        "0",
        "--metrics-base-port",
        "0",
        *([] if restart else ["--no-restart"]),
    ]


def metrics_text(port: int) -> str:
    """The text of the /metrics endpoint on a loopback `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0


def replica_items(address: str, shard: int, max_k: int = 1000) -> list[Any]:
    """Every item (IndexItem, vector included) one index process holds for `shard`, read from it directly.

    The ids come from an exhaustive search with K = `max_k` (the cluster's CROSSMODAL_MAX_K: keep the
    shard below it), the items from GetVectors; an empty shard (no dimension yet) holds none.
    """
    with grpc.insecure_channel(address) as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        stats = stub.GetShardStats(index_pb2.GetShardStatsRequest(), timeout=30)
        dim = next(s.dim for s in stats.shards if s.shard == shard)
        if not dim:
            return []
        request = index_pb2.SearchShardRequest(shard=shard, vector=[1.0] * dim, k=max_k, exact=True)
        ids = [h.id for h in stub.SearchShard(request, timeout=120).hits]
        items = []
        for start in range(0, len(ids), 1000):
            reply = stub.GetVectors(
                index_pb2.GetVectorsRequest(shard=shard, ids=ids[start : start + 1000], include_vectors=True),
                timeout=60,
            )
            items.extend(reply.items)
        return items
