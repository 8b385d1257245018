"""Issue 19: a reshard survives kill -9 of a shard, of the gateway and of the reshard command mid-move.

Smaller than the online test (4,000 items and 600 more ingested during the moves), on one cluster:
grow 2 -> 4 killing a new owner and the command while partitions are copied, then shrink 4 -> 2 killing
the gateway and an old owner after the flip. Each time the same command is run again and the result is
the online test's: every acknowledged item exactly once, evenly spread, no deleted item back.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

from crossmodal.cluster import LocalCluster
from services.common.partitionmap import COPYING, DRAINING
from tests.reshard.helpers import check_result, cluster_report, load, map_of, reshard, reshard_command, reshard_spec
from tests.reshard.test_online import Writer
from tests.support import wait_for

BULK = 4_000


def _kill_when(cluster: LocalCluster, phase: str, before: int) -> None:
    """Wait until the stored map is in `phase` at a version after `before`."""
    wait_for(
        lambda: (m := map_of(cluster)).phase == phase and m.version > before, 60, f"the move to reach {phase}", 0.02
    )


def test_kill_9_of_a_shard_the_command_and_the_gateway_mid_move_then_resume(tmp_path: Path, bundle_dir: Path) -> None:
    cluster = LocalCluster(reshard_spec(tmp_path / "cluster", bundle_dir)).start()
    try:
        bulk = load(cluster, BULK, seed=29)
        doomed = random.Random(5).sample(sorted(bulk), 200)

        # Grow: a new owner and the command die while partitions are being copied.
        writer = Writer(cluster.address, "grow", 300, doomed[:100])
        writer.start()
        command = reshard_command(cluster.address, 4)
        _kill_when(cluster, COPYING, 1)
        cluster.kill("index-3-0")
        command.send_signal(signal.SIGKILL)
        command.wait(30)
        cluster.restart("index-3-0")
        other = reshard_command(cluster.address, 3)
        output, _ = other.communicate(timeout=60)
        assert other.returncode == 1 and "FAILED_PRECONDITION" in output, output + cluster_report(cluster)
        assert "a reshard to 4 shards is under way" in output and "--shards 4" in output, output
        output = reshard(cluster.address, 4)
        assert "resuming the move under way" in output and "done: 4 shards" in output, output
        writer.join(300)
        assert not writer.errors, writer.errors
        expected = (set(bulk) - writer.deleted) | writer.acked
        deleted = set(writer.deleted)
        check_result(cluster, expected, deleted, 4)

        # Shrink: the gateway and an old owner die after the flip, while old owners drain.
        writer = Writer(cluster.address, "shrink", 300, doomed[100:])
        writer.start()
        version = map_of(cluster).version
        command = reshard_command(cluster.address, 2)
        _kill_when(cluster, DRAINING, version)
        cluster.kill("gateway")
        cluster.kill("index-2-0")
        output, _ = command.communicate(timeout=60)
        assert command.returncode == 1 and "run the same command again" in output, output + cluster_report(cluster)
        writer.join(300)  # the writer's stream broke with the gateway: what it acknowledged counts
        cluster.restart("gateway")
        cluster.restart("index-2-0")
        output = reshard(cluster.address, 2)
        assert "done: 2 shards" in output, output
        expected = (expected - writer.deleted) | writer.acked
        deleted |= writer.deleted
        # A delete the gateway acknowledged before it died counts; one it did not may or may not have landed.
        check_result(cluster, expected, deleted, 2)
    finally:
        cluster.stop()
