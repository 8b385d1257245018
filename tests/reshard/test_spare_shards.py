"""What a cluster does with more or fewer shard processes than the partition map uses, and without a log."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from crossmodal.client import Client
from crossmodal.cluster import ClusterError, ClusterSpec, LocalCluster
from services.common import partitionmap
from services.common.placement import item_hash
from tests.reshard.helpers import advance_map, map_of, publish, reshard_command, reshard_spec, vectors
from tests.support import wait_for


def test_spare_shards_serve_nothing_until_a_reshard_and_missing_ones_stop_the_gateway(
    tmp_path: Path, bundle_dir: Path
) -> None:
    data = tmp_path / "cluster"
    with LocalCluster(reshard_spec(data, bundle_dir)) as cluster, Client(cluster.address) as client:
        stats = client.stats()
        items = dict(zip((f"item-{n}" for n in range(300)), vectors(300, stats.dim, seed=1), strict=True))
        publish(cluster, stats.model_id, items)
        wait_for(lambda: client.stats().total_count == 300, 60, "the items to be applied", interval=0.2)
    # `crossmodal up --shards 4` on the same data: shards 2 and 3 start empty and own nothing.
    with LocalCluster(reshard_spec(data, bundle_dir, shards=4)) as cluster, Client(cluster.address) as client:
        current = map_of(cluster)
        assert current.version == 1 and current.shards == (0, 1)
        stats = client.stats()
        counts = {shard: replicas[0].count for shard, replicas in stats.shards.items()}
        assert counts[2] == counts[3] == 0 and counts[0] + counts[1] == 300, counts
        hits = client.search(vector=items["item-7"].tolist(), k=1, exact=True, require_complete=True).hits
        assert [h.id for h in hits] == ["item-7"]
        plan = reshard_command(cluster.address, 4, "--dry-run")
        output, _ = plan.communicate(timeout=60)
        assert plan.returncode == 0 and "32 of 64 partitions move" in output, output
        too_many = reshard_command(cluster.address, 5)
        output, _ = too_many.communicate(timeout=60)
        assert too_many.returncode == 1 and "has addresses for 4 shards" in output, output
    # One shard process for a map that gives partitions to two: the gateway refuses to start, saying why.
    with pytest.raises(ClusterError, match="gives partitions to shard 1: list the addresses"):
        LocalCluster(reshard_spec(data, bundle_dir, shards=1)).start(timeout=60)


def test_direct_mode_cannot_reshard_and_says_how_to_get_a_log(tmp_path: Path, bundle_dir: Path) -> None:
    spec = ClusterSpec.on_free_ports(tmp_path / "direct", shards=1, bundle=bundle_dir)
    with LocalCluster(spec) as cluster, Client(cluster.address) as client:
        with pytest.raises(grpc.RpcError) as refused:
            list(client.reshard(2))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "resharding needs the write log" in (refused.value.details() or "")


def test_stats_count_a_moving_partition_once(tmp_path: Path, bundle_dir: Path) -> None:
    # While partitions are copied to their new owner, and until the old one drops them, both store them:
    # the total is what the owners at the current map version answer for, not the sum of what is stored.
    with LocalCluster(reshard_spec(tmp_path / "c", bundle_dir, shards=4)) as cluster, Client(cluster.address) as c:
        stats = c.stats()
        ids = [f"item-{n}" for n in range(400)]
        publish(cluster, stats.model_id, dict(zip(ids, vectors(400, stats.dim, seed=2), strict=True)))
        wait_for(lambda: c.stats().total_count == 400, 60, "the items to be applied", interval=0.2)
        advance_map(cluster, lambda current: partitionmap.start_move(current, 2))
        moving = map_of(cluster)
        copies = sum(item_hash(i) % moving.partitions in moving.incoming for i in ids)

        def stored() -> int:
            return sum(replicas[0].count for replicas in c.stats().shards.values())

        wait_for(lambda: stored() == 400 + copies, 60, f"the new owners to copy {copies} items", interval=0.2)
        assert c.stats().total_count == 400
        advance_map(cluster, partitionmap.flip)  # the new owners answer; the old ones still store the items
        wait_for(lambda: map_of(cluster).phase == partitionmap.DRAINING, 30, "the flip")
        assert stored() == 400 + copies and c.stats().total_count == 400
