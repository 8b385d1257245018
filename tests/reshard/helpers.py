"""What the reshard tests share: a cluster with a write log, bulk writes, the reshard command, the checks."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from crossmodal.client import Client
from crossmodal.cluster import ClusterSpec, LocalCluster
from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from services.common import partitionmap, writelog
from services.gateway.writer import LogWriter
from tests.faults.helpers import GET_BATCH
from tests.support import ROOT, replica_items, wait_for

# The most items one exhaustive search reads back from a shard (the cluster's CROSSMODAL_MAX_K).
MAX_K = 100_000
# Old owners keep a moved partition this long after the flip (the gateway's grace period), in seconds.
GRACE_SECONDS = 2.0


def reshard_spec(data_dir: Path, bundle: Path, shards: int = 2) -> ClusterSpec:
    """`shards` shards x 1 replica with a one-node write log, on free loopback ports."""
    return ClusterSpec.on_free_ports(
        data_dir,
        shards=shards,
        replicas=1,
        bundle=bundle,
        log="single",
        env={"CROSSMODAL_MAX_K": str(MAX_K)},
        gateway_env={"CROSSMODAL_GATEWAY_RESHARD_GRACE_SECONDS": str(GRACE_SECONDS)},
    )


def vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """`count` random unit vectors (seeded): far enough apart that an exact search finds each one first."""
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def publish(cluster: LocalCluster, model_id: str, items: dict[str, np.ndarray]) -> None:
    """Write `items` (text-modality vectors) through the write log as the gateway does; all acknowledged.

    Bulk loads go straight to the log (what the gateway's LogWriter does with an encoded item), because
    encoding 20,000 texts on this machine's CPUs would take most of the test's time.
    """

    async def run() -> None:
        assert cluster.log is not None
        config = writelog.LogConfig(url=cluster.log.url, timeout_seconds=30)
        nc = await writelog.connect(config, "reshard-test")
        js = nc.jetstream(timeout=30)
        writer = LogWriter(js, await writelog.read_layout(js, config.stream), model_id, 30)
        ids = list(items)
        for start in range(0, len(ids), 2000):
            batch = [
                index_pb2.IndexItem(id=i, vector=items[i].tolist(), modality=types_pb2.MODALITY_TEXT, metadata={"n": i})
                for i in ids[start : start + 2000]
            ]
            outcomes = await writer.upsert(0, batch)
            assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error][:3]
        await nc.close()

    asyncio.run(run())


def map_of(cluster: LocalCluster) -> partitionmap.PartitionMap:
    """The partition map as stored now."""
    return _stored_map(cluster)


def advance_map(cluster: LocalCluster, step: Callable[[partitionmap.PartitionMap], partitionmap.PartitionMap]) -> None:
    """Store `step` of the current map as its next version, as the gateway's reshard does (e.g. `start_move`)."""
    _stored_map(cluster, step)


def _stored_map(
    cluster: LocalCluster, step: Callable[[partitionmap.PartitionMap], partitionmap.PartitionMap] | None = None
) -> partitionmap.PartitionMap:
    """Read the stored map; with `step`, write `step` of it as the next version (compare-and-set)."""

    async def run() -> partitionmap.PartitionMap:
        assert cluster.log is not None
        nc = await writelog.connect(writelog.LogConfig(url=cluster.log.url), "reshard-test")
        try:
            kv = await partitionmap.open_bucket(nc.jetstream(timeout=10), "CROSSMODAL")
            found = await partitionmap.read(kv)
            assert found is not None
            if step is not None:
                await partitionmap.write(kv, step(found[0]), found[1])
            return found[0]
        finally:
            await nc.close()

    return asyncio.run(run())


def reshard_command(address: str, shards: int, *extra: str) -> subprocess.Popen[str]:
    """`crossmodal reshard --shards N` as a user runs it, its output on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "crossmodal.cli", "reshard", "--shards", str(shards), "--address", address, *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def cluster_report(cluster: LocalCluster) -> str:
    """Which processes run (or how they ended) and the gateway's last log lines: for a failure message."""
    states = []
    for process in cluster.processes:
        code = None if process.proc is None else process.proc.poll()
        states.append(f"{process.name}: {'running' if process.proc and code is None else f'ended ({code})'}")
    return "\n".join(["\nprocesses: " + ", ".join(states), "gateway log:", cluster.by_name("gateway").tail(30)])


def reshard(address: str, shards: int) -> str:
    """Run the reshard command to its end; its output (it must succeed)."""
    proc = reshard_command(address, shards)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    return output


class SearchLoop:
    """A client that searches all the time: each search by a stored item's own vector must find it first.

    Exact searches with require_complete, so a search that misses, duplicates or fails is the cluster's
    fault, never the graph's approximation.
    """

    def __init__(self, address: str, items: dict[str, np.ndarray], seed: int) -> None:
        self.address = address
        self.items = items
        self.random = random.Random(seed)
        self.searches = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="search-loop", daemon=True)

    def __enter__(self) -> SearchLoop:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        ids = sorted(self.items)
        with Client(self.address) as client:
            while not self._stop.is_set():
                item_id = self.random.choice(ids)
                started = time.perf_counter()
                try:
                    hits = client.search(
                        vector=self.items[item_id].tolist(), k=5, exact=True, require_complete=True, timeout=10
                    ).hits
                except grpc.RpcError as exc:
                    self.failures.append(f"{item_id}: {exc.code().name}: {exc.details()}")
                    continue
                self.latencies.append(time.perf_counter() - started)
                self.searches += 1
                found = [h.id for h in hits]
                if len(set(found)) != len(found):
                    self.failures.append(f"{item_id}: duplicated ids {found}")
                elif not found or found[0] != item_id:
                    self.failures.append(f"{item_id}: missed, got {found}")


def shard_contents(cluster: LocalCluster) -> dict[int, list[str]]:
    """The ids each shard's (only) replica stores, read from it directly."""
    out: dict[int, list[str]] = {}
    for process in cluster.processes:
        if process.module == "services.index":
            shard = int(process.name.split("-")[1])
            out[shard] = [item.id for item in replica_items(process.address, shard, MAX_K)]
    return out


def settled(cluster: LocalCluster, shards: int) -> bool:
    """Whether the map is stable with `shards` owners and every replica stores exactly what its shard owns."""
    current = map_of(cluster)
    if current.phase != partitionmap.STABLE or len(current.shards) != shards:
        return False
    for process in cluster.processes:
        if process.module != "services.index":
            continue
        with grpc.insecure_channel(process.address) as channel:
            stats = index_pb2_grpc.IndexServiceStub(channel).GetShardStats(index_pb2.GetShardStatsRequest(), timeout=10)
        for shard in stats.shards:
            owned = current.owned(shard.shard)
            held = set(shard.partition_items) | {p.partition for p in shard.applied}
            if shard.map_version != current.version or not held <= owned:
                return False
    return True


def check_result(cluster: LocalCluster, expected: set[str], deleted: set[str], shards: int) -> dict[int, int]:
    """Every expected item stored exactly once, spread evenly over `shards` shards, no deleted one back.

    Returns the items per shard.
    """
    wait_for(lambda: settled(cluster, shards), 60, f"the move to {shards} shards to settle", interval=0.3)
    contents = shard_contents(cluster)
    copies = collections.Counter(i for ids in contents.values() for i in ids)
    twice = [i for i, n in copies.items() if n > 1]
    assert not twice, f"{len(twice)} items are stored by two shards, e.g. {twice[:5]}"
    missing = expected - set(copies)
    assert not missing, f"{len(missing)} acknowledged items are stored nowhere, e.g. {sorted(missing)[:5]}"
    back = deleted & set(copies)
    assert not back, f"{len(back)} deleted items came back, e.g. {sorted(back)[:5]}"
    assert set(copies) == expected, f"unexpected items: {sorted(set(copies) - expected)[:5]}"
    counts = {shard: len(ids) for shard, ids in contents.items()}
    mean = len(expected) / shards
    for shard, count in counts.items():
        if shard < shards:
            assert abs(count - mean) <= 0.2 * mean, f"shard {shard} holds {count} items, the mean is {mean:.0f}"
        else:
            assert count == 0, f"shard {shard} is not in the map but still holds {count} items"
    with Client(cluster.address) as client:
        ids = sorted(expected | deleted)
        for start in range(0, len(ids), GET_BATCH):
            items, absent = client.get(ids[start : start + GET_BATCH], timeout=60)
            assert {i.id for i in items} == expected & set(ids[start : start + GET_BATCH])
            assert set(absent) == deleted & set(ids[start : start + GET_BATCH])
    return counts


def shard_search(cluster: LocalCluster, shard: int, vector: np.ndarray, version: int) -> list[str] | grpc.StatusCode:
    """An exact search of one shard's replica planned at map `version`: the ids, or the status it failed with."""
    process = cluster.by_name(f"index-{shard}-0")
    request = index_pb2.SearchShardRequest(shard=shard, vector=vector.tolist(), k=5, exact=True, map_version=version)
    with grpc.insecure_channel(process.address) as channel:
        try:
            reply = index_pb2_grpc.IndexServiceStub(channel).SearchShard(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return [hit.id for hit in reply.hits]


def load(cluster: LocalCluster, count: int, seed: int) -> dict[str, np.ndarray]:
    """Write `count` items (`bulk-<n>`) through the log into the cluster's 2 shards, wait until they are
    applied, then start shards 2 and 3 (spare: they own nothing yet); the items by id."""
    with Client(cluster.address) as client:
        stats = client.stats()
    bulk = dict(zip((f"bulk-{n:05d}" for n in range(count)), vectors(count, stats.dim, seed=seed), strict=True))
    publish(cluster, stats.model_id, bulk)
    with Client(cluster.address) as client:
        wait_for(lambda: client.stats().total_count == count, 120, "the shards to apply the bulk load", interval=0.2)
    cluster.add_shards(4)
    return bulk
