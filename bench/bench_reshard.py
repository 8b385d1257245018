"""Resharding benchmark (issue 19): grow a loaded cluster from 2 to 4 shards online.

A local cluster (2 shards x 1 replica, a one-node JetStream write log) is loaded with N items of 512-d
float32 vectors published straight into the log (what the gateway publishes for an encoded item; N =
100,000 by default). Then:

1. search latency before the move: one client runs "more like this" searches (like_id: the gateway reads
   the item from its owner at the map version it holds, then searches every owning shard at that version)
   for a fixed time;
2. two more shards are started and the gateway restarted on four addresses (`LocalCluster.add_shards`);
3. `crossmodal reshard --shards 4` runs while the same client keeps searching: the time of the whole move,
   of its copy phase (new owners replaying their partitions from the log), items moved per second, and
   search p50/p99 during the move against before, from the same run.

like_id searches are used because the default bundle's embedding has fewer dimensions than the 512 of the
vectors: the gateway would refuse a 512-d query vector, but a stored item's own vector is used as it is.

Writes bench/results/reshard.json and reshard.md. `--quick` uses 10,000 items.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodal.client import Client  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, LocalCluster  # noqa: E402
from tests.reshard.helpers import publish, reshard_command, reshard_spec, vectors  # noqa: E402
from tests.support import wait_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values` in ms (0 when empty)."""
    return float(np.percentile(values, q)) * 1000 if values else 0.0


class Searches:
    """One client's like_id searches in a loop; latencies while `recording`, failures always."""

    def __init__(self, address: str, ids: list[str]) -> None:
        self.address, self.ids = address, ids
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def take(self) -> list[float]:
        """The latencies so far, and start a new list."""
        out, self.latencies = self.latencies, []
        return out

    def start(self) -> None:
        """Begin searching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop searching."""
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        rng = random.Random(1)
        with Client(self.address, read_your_writes=False) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    client.search(like_id=rng.choice(self.ids), k=10, require_complete=True, timeout=10)
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                    continue
                self.latencies.append(time.perf_counter() - started)


def run(root: Path, count: int, dim: int, window: float) -> dict[str, float | int]:
    """Load `count` items into 2 shards, then reshard to 4 while searching; the measures."""
    cluster = LocalCluster(reshard_spec(root / "cluster", DEFAULT_BUNDLE)).start()
    try:
        with Client(cluster.address) as client:
            model_id = client.stats().model_id
        ids = [f"v{n:07d}" for n in range(count)]
        started = time.perf_counter()
        for first in range(0, count, 20_000):
            chunk = ids[first : first + 20_000]
            publish(cluster, model_id, dict(zip(chunk, vectors(len(chunk), dim, seed=first), strict=True)))
        publish_s = time.perf_counter() - started
        with Client(cluster.address) as client:
            wait_for(lambda: client.stats().total_count == count, 3600, "the load to be applied", interval=1)
        load_s = time.perf_counter() - started
        cluster.add_shards(4)
        searches = Searches(cluster.address, ids)
        searches.start()
        time.sleep(window)
        before = searches.take()
        started = time.perf_counter()
        command = reshard_command(cluster.address, 4)
        copy_started = copy_ended = 0.0
        assert command.stdout is not None
        for line in command.stdout:
            now = time.perf_counter() - started
            if "copying:" in line and not copy_started:
                copy_started = now
            if "map flipped" in line:
                copy_ended = now
        assert command.wait() == 0, "the reshard failed"
        reshard_s = time.perf_counter() - started
        during = searches.take()
        searches.stop()
        moved = count // 2
        return {
            "items": count,
            "dim": dim,
            "publish_s": publish_s,
            "load_s": load_s,
            "reshard_s": reshard_s,
            "copy_s": copy_ended - copy_started,
            "items_moved": moved,
            "moved_items_per_s": moved / max(copy_ended - copy_started, 1e-9),
            "search_before_p50_ms": percentile(before, 50),
            "search_before_p99_ms": percentile(before, 99),
            "search_during_p50_ms": percentile(during, 50),
            "search_during_p99_ms": percentile(during, 99),
            "searches_before": len(before),
            "searches_during": len(during),
            "search_failures": len(searches.failures),
        }
    finally:
        cluster.stop()


def main() -> int:
    """Run the benchmark and write bench/results/reshard.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 items (a smoke run)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    count, window = (10_000, 5.0) if args.quick else (args.items, 20.0)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-reshard-") as tmp:
        r = run(Path(tmp), count, args.dim, window)
    result = {"date": time.strftime("%Y-%m-%d"), "cores": len(os.sched_getaffinity(0)), **r}
    (RESULTS / "reshard.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"## Resharding 2 -> 4 shards online ({result['date']}, {result['cores']} cores)",
        "",
        f"{count:,} items of {args.dim}-d float32 in 2 shards x 1 replica (write log: one JetStream node); "
        "one client runs like_id searches (K=10, require_complete) before and during the move.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| load: publish / applied by 2 shards | {r['publish_s']:.1f} s / {r['load_s']:.1f} s |",
        f"| reshard 2 -> 4, whole command | {r['reshard_s']:.1f} s |",
        f"| copy phase ({r['items_moved']:,} items replayed by the new shards) | {r['copy_s']:.1f} s |",
        f"| items moved per second | {r['moved_items_per_s']:,.0f} |",
        f"| search p50 / p99 before | {r['search_before_p50_ms']:.1f} / {r['search_before_p99_ms']:.1f} ms |",
        f"| search p50 / p99 during the move | {r['search_during_p50_ms']:.1f} / {r['search_during_p99_ms']:.1f} ms |",
        f"| p50 during / before | {r['search_during_p50_ms'] / max(r['search_before_p50_ms'], 1e-9):.2f} |",
        f"| searches before / during / failed | {r['searches_before']} / {r['searches_during']} / "
        f"{r['search_failures']} |",
    ]
    (RESULTS / "reshard.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if not r["search_failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
