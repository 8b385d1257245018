"""Issue 19: grow a running cluster from 2 to 4 shards and shrink it back, online, on real processes.

20,000 items in 2 shards; `crossmodal reshard --shards 4` while one client searches all the time (exact
searches by stored items' own vectors, which must find them first: never a miss, a duplicate or a
failure) and another ingests 5,000 more through the gateway and deletes some. Afterwards every
acknowledged item is stored exactly once, the shards hold within 20% of the mean, and no deleted item
is back. Then the same back down to 2 shards.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import grpc

from crossmodal.client import Client
from crossmodal.cluster import LocalCluster
from services.common.placement import item_hash
from tests.faults.helpers import text_items
from tests.reshard.helpers import (
    SearchLoop,
    check_result,
    load,
    map_of,
    reshard,
    reshard_command,
    reshard_spec,
    shard_search,
)
from tests.support import wait_for

BULK = 20_000
MORE = 5_000
DELETED = 500


def writer_partition_owner(cluster: LocalCluster, item_id: str) -> int:
    """The shard that owns an item's partition in the stored map."""
    current = map_of(cluster)
    return current.owner_of(item_hash(item_id) % current.partitions)


class Writer(threading.Thread):
    """Ingests texts through the gateway and deletes bulk items meanwhile; records what was acknowledged."""

    def __init__(self, address: str, prefix: str, count: int, delete: list[str]) -> None:
        super().__init__(name="writer", daemon=True)
        self.address, self.items, self.delete = address, text_items(prefix, count), delete
        self.acked: set[str] = set()
        self.deleted: set[str] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        with Client(self.address) as client:
            try:
                for n, ack in enumerate(client.ingest(self.items, window=512)):
                    if ack.ok:
                        self.acked.add(ack.id)
                    if n % 100 == 0 and self.delete:
                        batch, self.delete = self.delete[:50], self.delete[50:]
                        client.delete(batch)
                        self.deleted.update(batch)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")


def test_grow_2_to_4_then_shrink_to_2_while_searching_ingesting_and_deleting(tmp_path: Path, bundle_dir: Path) -> None:
    cluster = LocalCluster(reshard_spec(tmp_path / "cluster", bundle_dir)).start()
    try:
        bulk = load(cluster, BULK, seed=19)
        # The plan changes nothing.
        dry = reshard_command(cluster.address, 4, "--dry-run")
        output, _ = dry.communicate(timeout=60)
        assert dry.returncode == 0 and "32 of 64 partitions move" in output and "dry run" in output, output
        assert map_of(cluster).version == 1

        doomed = random.Random(7).sample(sorted(bulk), DELETED)
        searched = {i: v for i, v in bulk.items() if i not in set(doomed)}
        writer = Writer(cluster.address, "more", MORE, doomed)
        with SearchLoop(cluster.address, searched, seed=3) as searches:
            writer.start()
            wait_for(lambda: len(writer.acked) >= 500 or not writer.is_alive(), 120, "ingest to get going")
            output = reshard(cluster.address, 4)
            writer.join(300)
        assert searches.searches > 20 and not searches.failures, (searches.searches, searches.failures[:5])
        assert not writer.errors and not writer.is_alive(), writer.errors
        assert writer.deleted == set(doomed) and len(writer.acked) == MORE
        assert "copying:" in output and "done: 4 shards" in output, output
        expected = (set(bulk) - writer.deleted) | writer.acked
        counts = check_result(cluster, expected, writer.deleted, 4)
        assert sorted(counts) == [0, 1, 2, 3]
        # Each shard answers for what it owns at the version a search was planned at: at version 2 (copying)
        # shard 2 stored its incoming partitions but owned nothing; shard 0 owned partitions it has dropped
        # since, so it says ABORTED (the gateway would plan again) rather than miss them.
        probe_id = next(i for i in sorted(searched) if writer_partition_owner(cluster, i) == 2)
        probe = searched[probe_id]
        assert shard_search(cluster, 2, probe, 2) == []
        assert shard_search(cluster, 0, probe, 2) == grpc.StatusCode.ABORTED
        answers = {shard: shard_search(cluster, shard, probe, 4) for shard in range(4)}
        assert answers[2][0] == probe_id and all(probe_id not in answers[s] for s in (0, 1, 3)), answers

        with SearchLoop(cluster.address, searched, seed=4) as searches:
            output = reshard(cluster.address, 2)
        assert "done: 2 shards" in output and searches.searches > 5 and not searches.failures, searches.failures[:5]
        check_result(cluster, expected, writer.deleted, 2)
    finally:
        cluster.stop()
