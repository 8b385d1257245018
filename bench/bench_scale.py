"""Scale benchmark: a million 512-d vectors over 4 real index processes, in f32 and in f16.

For each precision, in one run on one machine:
- build: 4 index processes (one shard each) are filled through UpsertVectors, 1,000 items per call,
  all four at once (one client thread per shard); the rate counts acknowledged (fsynced) vectors;
- size: resident memory (VmRSS) of each process and bytes per vector, and the data directory on disk;
- search: a 4-shard fan-out (SearchShard to every shard at once, top-10 merged as the gateway merges)
  from one client, p50/p99, and recall@10 against exact search over all vectors, at the default ef;
- open: each shard is snapshotted, stopped and started again alone; the time from the process start
  to SERVING, and whether it loaded its snapshot (a rebuild shows in crossmodal_index_rebuilds_total).

The vectors are generated from a seed (clustered, like embeddings), never stored in the repository.

    python bench/bench_scale.py                 # 1,000,000 vectors (about 40 minutes on 2 cores)
    python bench/bench_scale.py --n 40000       # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_index import clustered, exact_top_k, queries_near, recall  # noqa: E402

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2  # noqa: E402
from tests.support import ServiceProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHARDS = 4
MODEL = "scale-bench"
K = 10
BATCH = 1000


def rss_bytes(pid: int) -> int:
    """Resident memory of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def start_shard(workdir: Path, number: int, dtype: str) -> tuple[ServiceProcess, float]:
    """Start one index process serving shard `number`; it and the seconds until it served."""
    env = {
        "CROSSMODAL_INDEX_DATA_DIR": str(workdir / f"shard-{number}"),
        "CROSSMODAL_INDEX_SHARDS": str(number),
        "CROSSMODAL_INDEX_DTYPE": dtype,
        # Snapshots are asked for explicitly before the restart; none in the middle of the build.
        "CROSSMODAL_INDEX_SNAPSHOT_INTERVAL_SECONDS": "86400",
        "CROSSMODAL_MAX_BATCH": str(BATCH),
    }
    started = time.perf_counter()
    proc = ServiceProcess("services.index", workdir / f"proc-{number}", env).wait_ready(timeout=1800)
    return proc, time.perf_counter() - started


def load_shard(proc: ServiceProcess, number: int, data: np.ndarray, rows: np.ndarray, progress: list[int]) -> None:
    """Upsert the vectors `rows` of `data` into shard `number`, BATCH per call."""
    with grpc.insecure_channel(proc.address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            items = [
                index_pb2.IndexItem(id=f"v{r}", modality=types_pb2.MODALITY_IMAGE, vector=data[r].tolist())
                for r in chunk
            ]
            reply = stub.UpsertVectors(
                index_pb2.UpsertVectorsRequest(shard=number, model_id=MODEL, items=items), timeout=600
            )
            assert all(s.code == 0 for s in reply.statuses), reply.statuses[:3]
            progress[number] += len(chunk)


def fan_out(stubs: list[Any], query: np.ndarray) -> list[int]:
    """Top-K over every shard, merged by score as the gateway merges."""
    vector = query.tolist()
    calls = [
        stub.SearchShard.future(index_pb2.SearchShardRequest(shard=n, vector=vector, k=K, model_id=MODEL), timeout=30)
        for n, stub in enumerate(stubs)
    ]
    hits = [h for c in calls for h in c.result().hits]
    hits.sort(key=lambda h: -h.score)
    return [int(h.id[1:]) for h in hits[:K]]


def run_precision(dtype: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, tmp: Path) -> dict[str, Any]:
    """Build, measure, restart: the figures of one precision."""
    n = len(data)
    owner = np.arange(n) % SHARDS  # an even spread, as the gateway's hash gives
    workdir = tmp / dtype
    procs = [start_shard(workdir, s, dtype)[0] for s in range(SHARDS)]
    out: dict[str, Any] = {"dtype": dtype}
    try:
        progress = [0] * SHARDS
        started = time.perf_counter()
        threads = [
            threading.Thread(target=load_shard, args=(procs[s], s, data, np.flatnonzero(owner == s), progress))
            for s in range(SHARDS)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(10)
            done = sum(progress)
            elapsed = time.perf_counter() - started
            print(f"  {dtype}: {done:,}/{n:,} vectors, {done / elapsed:,.0f}/s", flush=True)
        for t in threads:
            t.join()
        build_seconds = time.perf_counter() - started
        assert sum(progress) == n, "a loader thread failed (see above)"
        out["build_seconds"] = build_seconds
        out["build_vectors_per_s"] = n / build_seconds
        rss = [rss_bytes(p.proc.pid) for p in procs]
        out["rss_bytes_per_shard"] = rss
        out["rss_bytes_per_vector"] = sum(rss) / n

        channels = [grpc.insecure_channel(p.address) for p in procs]
        stubs = [index_pb2_grpc.IndexServiceStub(c) for c in channels]
        for q in queries[:50]:
            fan_out(stubs, q)
        found, latencies = [], []
        for q in queries:
            t = time.perf_counter()
            found.append(fan_out(stubs, q))
            latencies.append(time.perf_counter() - t)
        ms = np.array(latencies) * 1000
        out["search"] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "recall_at_10": recall(found, truth),
        }
        print(f"  {dtype}: search {out['search']}", flush=True)
        for n_, stub in enumerate(stubs):
            stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=n_), timeout=1800)
        for c in channels:
            c.close()
        out["disk_bytes_per_vector"] = disk_bytes(workdir) / n
    finally:
        for p in procs:
            p.terminate()
            p.close()
    # Each shard alone, so that one open time is not four sharing two cores.
    opens, rebuilt = [], []
    for s in range(SHARDS):
        proc, seconds = start_shard(workdir, s, dtype)
        try:
            opens.append(seconds)
            rebuilt.append(
                sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in proc.metrics().splitlines()
                    if line.startswith("crossmodal_index_rebuilds_total{")
                )
            )
        finally:
            proc.terminate()
            proc.close()
    out["open_seconds_per_shard"] = opens
    out["open_seconds_per_250k"] = max(opens) / (n / SHARDS) * 250_000
    out["rebuilds_at_open"] = rebuilt
    print(f"  {dtype}: open {opens} s, rebuilds {rebuilt}", flush=True)
    return out


def render(out: dict[str, Any]) -> str:
    """The README table."""
    n = out["n"]
    lines = [
        f"## Scale: {n:,} x {out['dim']}-d vectors over {SHARDS} index processes "
        f"({out['queries']} queries, default ef, {out['cpus']} cores)",
        "",
        "| precision | build vectors/s | RSS per shard (MiB) | RSS B/vector | disk B/vector | search p50 ms | p99 ms "
        "| recall@10 | open s per shard (max) | open s per 250k | rebuilt at open |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["runs"]:
        lines.append(
            f"| {r['dtype']} | {r['build_vectors_per_s']:,.0f} | {max(r['rss_bytes_per_shard']) / 2**20:,.0f} | "
            f"{r['rss_bytes_per_vector']:,.0f} | {r['disk_bytes_per_vector']:,.0f} | {r['search']['p50_ms']:.2f} | "
            f"{r['search']['p99_ms']:.2f} | {r['search']['recall_at_10']:.3f} | "
            f"{max(r['open_seconds_per_shard']):.1f} | {r['open_seconds_per_250k']:.1f} | "
            f"{int(sum(r['rebuilds_at_open']))} |"
        )
    lines += ["", "Targets: recall@10 >= 0.95; open <= 5 s per 250,000 vectors (a snapshot loaded, not rebuilt).", ""]
    return "\n".join(lines)


def main() -> int:
    """Run both precisions and write bench/results/scale.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in all")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dtypes", default="f32,f16")
    parser.add_argument("--quick", action="store_true", help="40,000 vectors, 200 queries")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 40_000, 200
    print(f"generating {args.n:,} x {args.dim} vectors ...", flush=True)
    data, centres = clustered(args.n, args.dim, max(10, args.n // 100), seed=1)
    queries = queries_near(centres, args.queries, seed=2)
    started = time.perf_counter()
    truth = exact_top_k(data, queries, K)
    print(f"exact top-{K} of {args.queries} queries in {time.perf_counter() - started:.1f}s", flush=True)
    out: dict[str, Any] = {"n": args.n, "dim": args.dim, "queries": args.queries, "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("CROSSMODAL_BENCH_TMP")) as tmp:
        for dtype in args.dtypes.split(","):
            print(f"{dtype}:", flush=True)
            out["runs"].append(run_precision(dtype, data, queries, truth, Path(tmp)))
            # The next precision's processes start from nothing: free this one's disk first.
            for path in sorted((Path(tmp) / dtype).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=2))
    md = render(out)
    (RESULTS / "scale.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
