"""Replicated write log benchmark: what the log costs and how fast replicas follow it.

1. Ingest end to end (texts through the encoders) into 2 shards x 1 replica, direct writes against the
   same shape with every write going through the log (a one-node JetStream); then 2 shards x 2 replicas
   with the log. While the log run ingests at full speed, every replica's lag is sampled (GetStats).
   Search p50 is measured on each cluster after its ingest.
2. Index replicas alone over the log, with realistic vectors (512-d float32, metadata): N writes published
   straight into the log; one replica follows them live; an empty replica then bootstraps all N; the first
   replica, stopped, misses N more and catches up. Writes the NATS server's resident memory and disk per
   item for the capacity model.

Writes bench/results/replication.json and replication.md. `--quick` uses small counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodal.client import Client  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster  # noqa: E402
from crossmodal.logserver import LogServer  # noqa: E402
from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2  # noqa: E402
from services.common import writelog  # noqa: E402
from services.common.placement import Placement  # noqa: E402
from tests.faults.helpers import text_items  # noqa: E402
from tests.support import ServiceProcess  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STREAM = "BENCH"
QUERIES = ["red circle note", "blue square note", "small green triangle", "large left right"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values` (0 when empty)."""
    return float(np.percentile(values, q)) if values else 0.0


def search_p50(address: str, rounds: int) -> float:
    """Median latency (ms) of text searches from one client."""
    times = []
    with Client(address, read_your_writes=False) as client:
        for n in range(rounds):
            started = time.perf_counter()
            client.search(QUERIES[n % len(QUERIES)], k=10)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def ingest_run(root: Path, name: str, replicas: int, log: str, count: int, searches: int) -> dict[str, float]:
    """Ingest `count` texts into a fresh 2-shard cluster; throughput, lag samples, search p50."""
    spec = ClusterSpec.on_free_ports(root / name, shards=2, replicas=replicas, bundle=DEFAULT_BUNDLE, log=log)
    items = text_items(name, count)
    lags: list[float] = []
    with LocalCluster(spec) as cluster, Client(cluster.address) as client:
        client.search("warm up", k=1)
        stop = threading.Event()

        def sample() -> None:
            with Client(cluster.address) as watcher:
                while not stop.is_set():
                    stats = watcher.stats(timeout=5)
                    lags.extend(r.log_lag_seconds for rs in stats.shards.values() for r in rs if r.healthy)
                    time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        if log != "none":
            sampler.start()
        started = time.perf_counter()
        acks = list(client.ingest(items, window=512))
        elapsed = time.perf_counter() - started
        stop.set()
        if sampler.is_alive():
            sampler.join()
        assert all(a.ok for a in acks), [a.message for a in acks if not a.ok][:3]
        client.get([items[-1].id])  # read after every write: the replicas caught up
        p50 = search_p50(cluster.address, searches)
    return {
        "items_per_s": count / elapsed,
        "lag_p50_s": percentile(lags, 50),
        "lag_p99_s": percentile(lags, 99),
        "lag_samples": len(lags),
        "search_p50_ms": p50,
    }


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def du_bytes(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def publish(url: str, stream: str, placement: Placement, start: int, count: int, dim: int) -> float:
    """Publish `count` random items of `dim` dimensions into the log; items/s."""
    nc = await writelog.connect(writelog.LogConfig(url=url), "bench")
    js = nc.jetstream(timeout=30)
    layout = await writelog.ensure_stream(js, stream, placement, replicas=1, max_bytes=-1)
    rng = np.random.default_rng(start)
    started = time.perf_counter()
    batch = 256
    for first in range(start, start + count, batch):
        vectors = rng.standard_normal((min(batch, start + count - first), dim)).astype(np.float32)
        futures = []
        for offset, vector in enumerate(vectors):
            item = index_pb2.IndexItem(
                id=f"v{first + offset:08d}",
                vector=vector.tolist(),
                modality=types_pb2.MODALITY_IMAGE,
                metadata={
                    "album": f"a{(first + offset) % 50}",
                    "camera": "bench",
                    "path": f"/photos/{first + offset}.jpg",
                },
                tags=["bench"],
            )
            futures.append(js.publish(layout.subject(item.id), writelog.encode_upsert(item, "bench-512")))
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


def replica(root: Path, name: str, url: str) -> ServiceProcess:
    """An index replica of shard 0 applying the log (started, not waited for)."""
    data = root / name / "data"
    env = {
        "CROSSMODAL_INDEX_DATA_DIR": str(data),
        "CROSSMODAL_LOG_URL": url,
        "CROSSMODAL_LOG_STREAM": STREAM,
        "CROSSMODAL_INDEX_SHARDS": "0",
    }
    return ServiceProcess("services.index", root / name, env)


def applied_count(process: ServiceProcess) -> tuple[int, int]:
    """(items held, log lag in messages) of shard 0 on one replica."""
    with grpc.insecure_channel(process.address) as channel:
        stats = index_pb2_grpc.IndexServiceStub(channel).GetShardStats(index_pb2.GetShardStatsRequest(), timeout=30)
    shard = next(s for s in stats.shards if s.shard == 0)
    return int(shard.count), int(shard.log_lag)


def wait_count(process: ServiceProcess, want: int, timeout: float) -> float:
    """Seconds until `process` holds `want` items with no log lag."""
    started = time.perf_counter()
    while True:
        try:
            count, lag = applied_count(process)
            if count >= want and lag == 0:
                return time.perf_counter() - started
        except grpc.RpcError:
            pass
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"the replica held {applied_count(process)} of {want} after {timeout:.0f} s")
        time.sleep(0.2)


def follower_run(root: Path, count: int, dim: int) -> dict[str, float]:
    """Live apply, bootstrap of an empty replica, and catch-up after missing `count` writes."""
    placement = Placement(shards=1, partitions=64)
    server = LogServer(root / "log").start()
    started_processes: list[ServiceProcess] = []

    def start(name: str) -> ServiceProcess:
        process = replica(root, name, server.url)
        started_processes.append(process)
        return process

    out: dict[str, float] = {}
    try:
        rss_before = rss_mib(server.proc.pid)  # type: ignore[union-attr]
        first = start("r1")
        out["publish_items_per_s"] = asyncio.run(publish(server.url, STREAM, placement, 0, count, dim))
        first.wait_ready(timeout=600)
        out["live_apply_s"] = wait_count(first, count, timeout=1800)
        out["nats_rss_mib_per_million_items"] = (rss_mib(server.proc.pid) - rss_before) / count * 1e6  # type: ignore[union-attr]
        out["log_disk_bytes_per_item"] = du_bytes(root / "log") / count
        started = time.perf_counter()
        second = start("r2").wait_ready(timeout=1800)
        out["bootstrap_ready_s"] = time.perf_counter() - started
        out["bootstrap_s"] = out["bootstrap_ready_s"] + wait_count(second, count, timeout=1800)
        out["bootstrap_items_per_s"] = count / out["bootstrap_s"]
        second.terminate()
        first.terminate()
        asyncio.run(publish(server.url, STREAM, placement, count, count, dim))
        started = time.perf_counter()
        again = start("r1").wait_ready(timeout=1800)
        out["catch_up_s"] = time.perf_counter() - started + wait_count(again, 2 * count, timeout=1800)
        out["catch_up_items_per_s"] = count / out["catch_up_s"]
    finally:
        for process in started_processes:
            process.close()
        server.stop()
    return out


def main() -> int:
    """Run both parts and write bench/results/replication.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--items", type=int, default=3000, help="texts ingested per cluster")
    parser.add_argument("--log-items", type=int, default=100_000, help="vectors published for the follower part")
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    items, log_items, searches = (300, 5000, 30) if args.quick else (args.items, args.log_items, 200)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-replication-") as tmp:
        root = Path(tmp)
        direct = ingest_run(root, "direct", 1, "none", items, searches)
        logged = ingest_run(root, "log", 1, "single", items, searches)
        replicated = ingest_run(root, "log2", 2, "single", items, searches)
        follower = follower_run(root, log_items, args.dim)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": len(os.sched_getaffinity(0)),
        "items": items,
        "log_items": log_items,
        "dim": args.dim,
        "direct_2x1": direct,
        "log_2x1": logged,
        "log_2x2": replicated,
        "log_vs_direct_ingest": logged["items_per_s"] / direct["items_per_s"],
        "log2x2_vs_direct_ingest": replicated["items_per_s"] / direct["items_per_s"],
        "search_p50_log_vs_direct": logged["search_p50_ms"] / direct["search_p50_ms"],
        "follower": follower,
    }
    (RESULTS / "replication.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"## Replicated write log ({result['date']}, {result['cores']} cores)",
        "",
        f"Ingest of {items} texts end to end (2 shards); search p50 from one client after the ingest.",
        "",
        "| cluster | items/s | vs direct | replica lag p50 / p99 (s) | search p50 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, run in (("direct, 2 x 1", direct), ("log, 2 x 1", logged), ("log, 2 x 2", replicated)):
        md.append(
            f"| {label} | {run['items_per_s']:.0f} | {run['items_per_s'] / direct['items_per_s']:.2f} | "
            f"{run['lag_p50_s']:.3f} / {run['lag_p99_s']:.3f} | {run['search_p50_ms']:.1f} |"
        )
    f = follower
    md += [
        "",
        f"Index replicas over the log, {log_items:,} items of {args.dim}-d float32 with metadata:",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| publish into the log (256 in flight) | {f['publish_items_per_s']:,.0f} items/s |",
        f"| a live replica applied them within | {f['live_apply_s']:.1f} s of the last publish |",
        f"| empty replica bootstrap (start to identical) | {f['bootstrap_s']:.1f} s "
        f"({f['bootstrap_items_per_s']:,.0f} items/s) |",
        f"| catch-up after missing {log_items:,} writes | {f['catch_up_s']:.1f} s "
        f"({f['catch_up_items_per_s']:,.0f} items/s) |",
        f"| NATS resident memory per million items | {f['nats_rss_mib_per_million_items']:,.0f} MiB |",
        f"| log disk per item | {f['log_disk_bytes_per_item']:,.0f} bytes |",
    ]
    (RESULTS / "replication.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
