"""CPU per search and single-client latency against its parts, for this tree and a baseline commit.

Each tree (this checkout, and the baseline commit checked out in a temporary git worktree) runs the
same measurement in its own subprocess, importing that tree's code: a local cluster (gateway, both
encoders, 4 shards, 1 replica) is filled with N generated captions through the gateway, then

- the parts: the raw text tower at batch 1 in process, and one direct SearchShard on one shard;
- one client's text search, p50 and p99;
- where one client's search spends its time, from each process's own latency histograms;
- saturation: C client threads search for S seconds while the CPU time (utime + stime from
  /proc/<pid>/stat) of every service process is read before and after; CPU per search is the sum
  over the processes divided by the searches answered.

This tree is measured a second time with GATEWAY_COALESCE_IN_FLIGHT=0 (every search its own calls), to
show what coalescing contributes. All runs are on the same machine in one invocation, so the ratios
compare like with like. Each search's text differs (a counter is appended), as real queries do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BASELINE = "c1d98bf"
WORDS = (
    ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"],
    ["circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon"],
    ["on the left", "on the right", "at the top", "at the bottom", "in the middle", "in a corner"],
)
QUERIES = ["a red circle", "two green triangles", "a small yellow star on the left", "a purple heart"]


def captions(n: int) -> list[str]:
    """N distinct generated captions (the index holds text items, as in the issue's measurement)."""
    colours, shapes, places = WORDS
    return [f"a {colours[i % 8]} {shapes[(i // 8) % 8]} {places[(i // 64) % 6]} number {i}" for i in range(n)]


def query(n: int) -> str:
    """The n-th query text: the QUERIES in turn, each made distinct by a number."""
    return f"{QUERIES[n % len(QUERIES)]} {n}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], q: float) -> float:
    """The q-quantile of samples, in milliseconds."""
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Run fn n times; each call's wall time."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def scrape(cluster: Any, name: str) -> str:
    """The /metrics text of one process of the cluster."""
    port = cluster.by_name(name).metrics_port
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def metric_sum(text: str, prefix: str) -> float:
    """The sum of the samples whose line starts with `prefix`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


# Where a single client's search spends its time, from each process's own histograms (mean ms per search).
STAGES = {
    "gateway: Search, received to answered": ("gateway", 'crossmodal_rpc_duration_seconds_sum{method="Search"'),
    "gateway: the encoder call, sent to answered": (
        "gateway",
        'crossmodal_gateway_encode_seconds_sum{modality="text"',
    ),
    "encoder: Encode, received to answered": (
        "encoder_text",
        'crossmodal_rpc_duration_seconds_sum{method="Encode"',
    ),
    "gateway: one shard's search, sent to answered": (
        "gateway",
        'crossmodal_gateway_shard_search_seconds_sum{shard="0"',
    ),
    "shard: SearchShard, received to answered": (
        "index-0-0",
        'crossmodal_rpc_duration_seconds_sum{method="SearchShard"',
    ),
}


def stages(before: dict[str, str], after: dict[str, str], searches: int) -> dict[str, float]:
    """Mean milliseconds per search of each stage in STAGES between two scrapes."""
    return {
        label: 1000 * (metric_sum(after[name], prefix) - metric_sum(before[name], prefix)) / searches
        for label, (name, prefix) in STAGES.items()
    }


def measure(texts: int, seconds: float, clients: int, env: dict[str, str]) -> dict[str, object]:
    """The measurement of the tree this process imports (see the module docstring)."""
    import grpc

    from crossmodal.bundle import ModelBundle
    from crossmodal.client import Client, Item
    from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster
    from crossmodal.v1 import index_pb2, index_pb2_grpc

    out: dict[str, object] = {"texts": texts, "clients": clients}
    with tempfile.TemporaryDirectory() as tmp:
        spec = ClusterSpec.on_free_ports(Path(tmp) / "c", shards=4, replicas=1, **({"env": env} if env else {}))
        with LocalCluster(spec) as cluster, Client(cluster.address) as client:
            started = time.perf_counter()
            acks = list(client.ingest(Item(f"t{i}", text=c) for i, c in enumerate(captions(texts))))
            assert all(a.ok for a in acks), [a for a in acks if not a.ok][:3]
            out["ingest_seconds"] = time.perf_counter() - started
            # Searches need the items applied everywhere: poll until the shards report them all.
            deadline = time.monotonic() + 120
            while client.stats().total_count < texts and time.monotonic() < deadline:
                time.sleep(0.2)

            bundle = ModelBundle.open(DEFAULT_BUNDLE, towers=("text",))
            query_vectors = [bundle.encode_texts([q])[0] for q in QUERIES]
            counter = iter(range(10**9))
            tower = timed(lambda: bundle.encode_texts([query(next(counter))]), 300)
            with grpc.insecure_channel(cluster.by_name("index-0-0").address) as channel:
                stub = index_pb2_grpc.IndexServiceStub(channel)

                def shard_search() -> None:
                    vector = query_vectors[next(counter) % len(query_vectors)]
                    stub.SearchShard(index_pb2.SearchShardRequest(vector=vector.tolist(), k=10), timeout=10)

                timed(shard_search, 50)
                shard = timed(shard_search, 300)

            def search() -> None:
                client.search(query(next(counter)), k=10)

            timed(search, 50)
            before = {name: scrape(cluster, name) for name in ("gateway", "encoder_text", "index-0-0")}
            single = timed(search, 300)
            after = {name: scrape(cluster, name) for name in before}
            out["stages"] = stages(before, after, len(single))
            out["parts"] = {"text_tower_batch1_p50_ms": pct(tower, 0.5), "search_shard_p50_ms": pct(shard, 0.5)}
            out["single_client"] = {
                "p50_ms": pct(single, 0.5),
                "p99_ms": pct(single, 0.99),
                "mean_ms": 1000 * sum(single) / len(single),
            }

            pids = {p.name: p.proc.pid for p in cluster.processes if p.proc is not None}
            done = [0] * clients
            stop = threading.Event()

            def worker(slot: int) -> None:
                while not stop.is_set():
                    client.search(query(slot * 10**6 + done[slot]), k=10)
                    done[slot] += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            time.sleep(2)  # past the ramp-up
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            client_before = time.process_time()
            counted, started = sum(done), time.perf_counter()
            time.sleep(seconds)
            answered, wall = sum(done) - counted, time.perf_counter() - started
            after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            client_cpu = time.process_time() - client_before
            stop.set()
            for t in threads:
                t.join()
            per_process = {name: 1000 * (after[name] - before[name]) / answered for name in pids}
            out["saturation"] = {
                "qps": answered / wall,
                "searches": answered,
                "cpu_ms_per_search": sum(per_process.values()),
                "cpu_ms_per_search_by_process": per_process,
                "client_cpu_ms_per_search": 1000 * client_cpu / answered,
            }
    return out


def run_tree(tree: Path, args: argparse.Namespace, service_env: dict[str, str] | None = None) -> dict[str, object]:
    """Run the measurement in a subprocess that imports the code of `tree` (services get `service_env`)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", "--texts", str(args.texts)]
    command += ["--seconds", str(args.seconds), "--clients", str(args.clients)]
    command += ["--service-env", json.dumps(service_env or {})]
    print(f"measuring {tree} ...", flush=True)
    done = subprocess.run(command, env=env, cwd=str(tree), check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    """Measure the baseline commit and this tree; write bench/results/search_cpu.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=20_000, help="captions in the index")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the saturation window")
    parser.add_argument("--clients", type=int, default=16, help="client threads at saturation")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with ('' for none)")
    parser.add_argument("--quick", action="store_true", help="5,000 texts and a 5 s window")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--service-env", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.texts, args.seconds = 5_000, 5.0
    if args.measure:
        print(json.dumps(measure(args.texts, args.seconds, args.clients, json.loads(args.service_env))))
        return 0

    out: dict[str, object] = {"texts": args.texts, "clients": args.clients, "baseline": args.baseline}
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            worktree = Path(tmp) / "baseline"
            git = ["git", "-C", str(ROOT)]
            added = subprocess.run([*git, "worktree", "add", "--detach", str(worktree), args.baseline], check=False)
            if added.returncode != 0:
                # A shallow clone, or a tree outside git: measure this tree alone.
                print(f"baseline {args.baseline} not measured: git could not check it out", flush=True)
                out["baseline"] = ""
            else:
                try:
                    out["before"] = run_tree(worktree, args)
                finally:
                    subprocess.run([*git, "worktree", "remove", "--force", str(worktree)], check=False)
    out["after"] = run_tree(ROOT, args)
    # What coalescing contributes: this tree with every search making its own calls.
    out["uncoalesced"] = run_tree(ROOT, args, {"CROSSMODAL_GATEWAY_COALESCE_IN_FLIGHT": "0"})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search_cpu.json").write_text(json.dumps(out, indent=2))
    md = render(out)
    (RESULTS / "search_cpu.md").write_text(md)
    print(md)
    return 0


def render(out: dict[str, object]) -> str:
    """The README table of the results."""
    runs = [(k, out[k]) for k in ("before", "after", "uncoalesced") if k in out]
    lines = [
        f"## CPU per search ({out['texts']:,} texts over 4 shards, {out['clients']} clients at saturation)",
        "",
        "| tree | CPU ms/search (services) | QPS | 1-client p50 ms | p99 ms | parts p50 ms (tower + shard) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in runs:
        label = {
            "before": f"baseline {out['baseline']}",
            "after": "this tree",
            "uncoalesced": "this tree, GATEWAY_COALESCE_IN_FLIGHT=0",
        }[name]
        parts = r["parts"]
        lines.append(
            f"| {label} | {r['saturation']['cpu_ms_per_search']:.2f} | {r['saturation']['qps']:.0f} | "
            f"{r['single_client']['p50_ms']:.2f} | {r['single_client']['p99_ms']:.2f} | "
            f"{parts['text_tower_batch1_p50_ms'] + parts['search_shard_p50_ms']:.2f} "
            f"({parts['text_tower_batch1_p50_ms']:.2f} + {parts['search_shard_p50_ms']:.2f}) |"
        )
    if "before" in out:
        before, after = out["before"], out["after"]
        ratio = after["saturation"]["cpu_ms_per_search"] / before["saturation"]["cpu_ms_per_search"]
        parts = after["parts"]["text_tower_batch1_p50_ms"] + after["parts"]["search_shard_p50_ms"]
        lines += [
            "",
            f"CPU per search, this tree / baseline: **{ratio:.2f}** (target <= 0.33). "
            f"Single-client p50 minus its parts: **{after['single_client']['p50_ms'] - parts:.2f} ms** "
            "(target <= 3 ms).",
        ]
    lines += ["", "| one client's search: mean ms per search | " + " | ".join(n for n, _ in runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    lines.append("| seen by the client | " + " | ".join(f"{r['single_client']['mean_ms']:.2f}" for _, r in runs) + " |")
    for label in STAGES:
        cells = [f"{r['stages'][label]:.2f}" if label in r.get("stages", {}) else "-" for _, r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| CPU ms per search by process | " + " | ".join(n for n, _ in runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    names = sorted(runs[-1][1]["saturation"]["cpu_ms_per_search_by_process"])
    for name in names:
        cells = [f"{r['saturation']['cpu_ms_per_search_by_process'].get(name, 0):.2f}" for _, r in runs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{r['saturation']['client_cpu_ms_per_search']:.2f}" for _, r in runs]
    lines.append("| (the benchmark's client, not counted) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
