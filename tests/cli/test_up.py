"""`crossmodal up` as a user runs it: the console script, from a directory of their own, with relative paths."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crossmodal.bundle import Manifest
from crossmodal.client import Client, Item
from tests.cli.upcli import FREE_PORTS, running_service, service_pids, start_up, wait_reported
from tests.support import ROOT


@pytest.fixture()
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A working directory outside the repository, with nothing of the repository left behind after."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    before = set(ROOT.iterdir())
    yield cwd
    # Hidden entries are tool caches (pytest, mypy, ruff) that other runs may create meanwhile.
    new = sorted(p.name for p in set(ROOT.iterdir()) - before if not p.name.startswith("."))
    assert new == [], "crossmodal up wrote into the repository"


def test_up_from_another_directory_keeps_relative_paths_there(elsewhere: Path, bundle_dir: Path) -> None:
    # The API keys file is relative too: a setting the cluster passes through from the caller's environment.
    (elsewhere / "keys.txt").write_text("# the only key\nsecret-key\n")
    bundle = os.path.relpath(bundle_dir, elsewhere)
    up, output = start_up(
        elsewhere,
        *("--data-dir", "run/data", "--bundle", bundle, "--shards", "2", "--port", "0", *FREE_PORTS),
        env={"CROSSMODAL_GATEWAY_API_KEYS_FILE": "keys.txt"},
    )
    try:
        address = wait_reported(up, output, r"gateway at ([0-9.]+:[0-9]+)", "crossmodal up to report the gateway")
        data = (elsewhere / "run" / "data").resolve()
        assert f"logs in {data / 'logs'}" in output.read_text()
        logs = {p.name for p in (data / "logs").iterdir()}
        assert {"gateway.log", "encoder_text.log", "index-0-0.log", "index-1-0.ready.json"} <= logs
        with Client(address, api_key="secret-key") as client:
            (ack,) = list(client.ingest([Item("note-1", text="a red circle", metadata={"k": "v"})]))
            assert ack.ok, ack
            found_items, missing = client.get(["note-1"])
            assert [(i.id, i.metadata, i.shard) for i in found_items] == [("note-1", {"k": "v"}, ack.shard)]
            assert missing == []
        # The shard wrote its store under the caller's data directory, in the shard the item went to.
        assert list((data / "index" / "replica-0").glob(f"shard-{ack.shard}/*"))
        with Client(address) as anonymous, pytest.raises(grpc.RpcError) as refused:
            anonymous.stats()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        up.send_signal(signal.SIGINT)
        status = up.wait(90)
    assert status == 0, output.read_text()
    assert "stopped" in output.read_text()


def test_a_child_that_fails_at_start_stops_the_others(elsewhere: Path, bundle_dir: Path) -> None:
    # The gateway starts last, once every other child is SERVING; a port held here makes its bind fail.
    # The holder does not set SO_REUSEPORT, so gRPC's bind (which does) is refused.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        up, output = start_up(
            elsewhere,
            *("--data-dir", "data", "--bundle", str(bundle_dir), "--shards", "2", "--port", str(taken), *FREE_PORTS),
        )
        try:
            status = up.wait(240)
        finally:
            if up.poll() is None:
                up.kill()
    text = output.read_text()
    assert status == 1, text
    logs = elsewhere / "data" / "logs"
    pids = service_pids(logs)
    # Every other child did start (their ready files name them), so "none left" below says something.
    # (The audio encoder too, once the bundle has an audio tower: tests/cli/test_up_audio.py.)
    audio = {"encoder_audio"} if "audio" in Manifest.load(bundle_dir).towers else set()
    assert set(pids) == {"encoder_text", "encoder_image", "index-0-0", "index-1-0", *audio}, text
    assert [name for name, pid in pids.items() if running_service(pid)] == []
    error = text[text.index("error: ") :]
    assert error.startswith("error: gateway exited with status 1"), text
    gateway_log = (logs / "gateway.log").read_text().splitlines()
    assert gateway_log and gateway_log[-1] in error  # the tail of the failed child's log is shown
