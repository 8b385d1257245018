"""`crossmodal up` and the write log: a local NATS JetStream server for replicated shards, handed to the
gateway and every index process, stopped last, and found again with its data by the next `up`."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from crossmodal.cluster import ClusterSpec
from tests.cli.upcli import (
    FREE_PORTS,
    environment,
    nats_servers,
    running_service,
    service_pids,
    start_up,
    wait_reported,
)
from tests.support import wait_for

PROBE_STREAM = "UPPROBE"


def _run_up(cwd: Path, data: Path, bundle: Path, *args: str) -> tuple[subprocess.Popen[str], Path, str]:
    """Start `up` with 1 shard x 2 replicas; the process, its output, and the log URL it reports."""
    up, output = start_up(
        cwd,
        *("--data-dir", str(data), "--bundle", str(bundle), "--shards", "1", "--replicas", "2", "--port", "0"),
        *FREE_PORTS,
        *args,
    )
    try:
        url = wait_reported(
            up, output, r"write log \(NATS JetStream\): (\S+),", "crossmodal up to report the cluster and its log"
        )
    except BaseException:
        up.send_signal(signal.SIGINT)
        up.wait(90)
        raise
    return up, output, url


def _stop(up: subprocess.Popen[str], output: Path, sig: int = signal.SIGINT) -> None:
    if up.poll() is None:
        up.send_signal(sig)
    status = up.wait(90)
    assert status == 0, output.read_text()


def _check_environments(data: Path, url: str, stream_replicas: str | None) -> dict[str, int]:
    """The gateway and both index replicas were given the log's URL, the encoders were not; their pids."""
    pids = service_pids(data / "logs")
    assert set(pids) == {"gateway", "encoder_text", "encoder_image", "encoder_audio", "index-0-0", "index-0-1", "http"}
    for name, pid in pids.items():
        env = environment(pid)
        if name == "gateway" or name.startswith("index-"):
            assert env.get("CROSSMODAL_LOG_URL") == url, name
        else:
            assert "CROSSMODAL_LOG_URL" not in env, name
    assert environment(pids["gateway"]).get("CROSSMODAL_GATEWAY_LOG_REPLICAS") == stream_replicas
    return pids


async def _jetstream(url: str, publish: bool) -> int:
    """Messages in the probe stream of the log at `url`, after publishing one first when `publish`."""
    connection = await nats.connect(servers=url.split(","), connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = connection.jetstream(timeout=10)
        if publish:
            await js.add_stream(name=PROBE_STREAM, subjects=["upprobe.>"])
            await js.publish("upprobe.one", b"stored before the restart")
        return int((await js.stream_info(PROBE_STREAM)).state.messages)
    finally:
        await connection.close()


def test_the_log_mode_follows_the_replicas_unless_given(tmp_path: Path) -> None:
    assert ClusterSpec(tmp_path, replicas=1).log == "none"
    assert ClusterSpec(tmp_path, replicas=2).log == "single"
    assert ClusterSpec(tmp_path, replicas=2, log="cluster").log == "cluster"
    assert ClusterSpec(tmp_path, replicas=1, log="single").log == "single"
    with pytest.raises(ValueError, match="log must be one of none, single, cluster"):
        ClusterSpec(tmp_path, log="kafka")


def test_replicas_start_a_jetstream_log_that_the_next_up_finds_again(tmp_path: Path, bundle_dir: Path) -> None:
    data = tmp_path / "data"
    store = data / "log"
    up, output, url = _run_up(tmp_path, data, bundle_dir)
    try:
        assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", url), url
        assert "write log: single" in output.read_text()
        assert len(nats_servers(store)) == 1
        pids = _check_environments(data, url, None)
        # A real JetStream server, with its store under the data directory.
        assert asyncio.run(_jetstream(url, publish=True)) == 1
        assert (store / "nats" / "jetstream").is_dir()
    finally:
        _stop(up, output)
    # The log stops last, with everything else.
    assert nats_servers(store) == []
    assert [name for name, pid in pids.items() if running_service(pid)] == []

    up, output, again = _run_up(tmp_path, data, bundle_dir)
    try:
        _check_environments(data, again, None)
        # Same store: the stream and its message are there.
        assert asyncio.run(_jetstream(again, publish=False)) == 1
    finally:
        _stop(up, output, signal.SIGTERM)
    assert nats_servers(store) == []


def test_a_three_node_log_gets_three_stream_replicas(tmp_path: Path, bundle_dir: Path) -> None:
    data = tmp_path / "data"
    up, output, url = _run_up(tmp_path, data, bundle_dir, "--log", "cluster")
    try:
        urls = url.split(",")
        assert len(urls) == 3 and len(set(urls)) == 3, url
        assert len(nats_servers(data / "log")) == 3
        pids = _check_environments(data, url, "3")

        # The nodes are routed into one JetStream cluster: a stream with three replicas can be placed.
        async def replicated() -> int:
            connection = await nats.connect(servers=urls, connect_timeout=5, max_reconnect_attempts=3)
            try:
                js = connection.jetstream(timeout=10)
                info = await js.add_stream(name=PROBE_STREAM, subjects=["upprobe.>"], num_replicas=3)
                return int(info.config.num_replicas or 0)
            finally:
                await connection.close()

        # Right after start the meta leader may still be being elected.
        assert wait_for(lambda: _try(replicated), 60, "the 3-node log to accept a stream with 3 replicas") == 3
    finally:
        _stop(up, output, signal.SIGTERM)
    assert nats_servers(data / "log") == []
    assert [name for name, pid in pids.items() if running_service(pid)] == []


def _try(make: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run the coroutine function `make`; 0 when JetStream is not ready yet."""
    try:
        return asyncio.run(make())
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return 0
