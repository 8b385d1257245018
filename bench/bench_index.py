"""Benchmark of the index shard against FAISS HNSW on clustered vectors.

Measures, in one run on one machine: add throughput (the shard end to end with its fsynced store,
raw USearch and FAISS on the same first vectors, FAISS on all), single-query and batched search QPS
and recall@10 against exact search at several expansion_search (ef) values for raw USearch, the shard
and FAISS at the same M and ef, memory per vector, snapshot save and load times, and filtered search
at 10% and 1% selectivity. Writes bench/results/index.json and index.md.

    python bench/bench_index.py --n 200000          # the figures in the notes
    python bench/bench_index.py --quick             # 20k vectors, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.index.config import PRECISIONS, ShardSettings  # noqa: E402
from services.index.domain import MODALITY_IMAGE, MODALITY_TEXT, Item, SearchQuery, make_filter  # noqa: E402
from services.index.shard import Shard  # noqa: E402

K = 10
BATCH = 1000
RAW_ADD_N = 20_000


def clustered(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` unit vectors around `clusters` random centres (cosine ~0.8 to their centre), and the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        labels = rng.integers(0, clusters, stop - start)
        chunk = centres[labels] + 0.5 * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out, centres


def queries_near(centres: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries drawn from the same distribution as the data."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), count)
    q = centres[labels] + 0.5 * rng.standard_normal((count, centres.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int, subset: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k row numbers by inner product (brute force in blocks)."""
    rows = np.arange(len(data)) if subset is None else subset
    matrix = data if subset is None else data[subset]
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ matrix.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + 100] = rows[np.take_along_axis(part, order, axis=1)]
    return out


def recall(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@k of `found` rows against `truth` rows."""
    hits = sum(len(set(map(int, f)) & set(map(int, t))) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def timed_loop(queries: np.ndarray, fn: Callable[[np.ndarray], list[int]]) -> tuple[list[list[int]], dict[str, float]]:
    """Run `fn` on each query; results and QPS, p50 and p99 latency in ms."""
    results, latencies = [], []
    started = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return results, {
        "qps": len(queries) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; the results as a JSON-ready dict."""
    import faiss
    from usearch.index import Index

    n, dim, m, ef_add = args.n, args.dim, args.connectivity, args.expansion_add
    efs = [int(e) for e in args.efs.split(",")]
    threads = os.cpu_count() or 1
    out: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "queries": args.queries,
        "connectivity": m,
        "expansion_add": ef_add,
        "dtype": args.dtype,
        "machine": {"cpus": threads, "processor": platform.processor() or platform.machine()},
        "versions": {"usearch": _version("usearch"), "faiss": faiss.__version__, "numpy": np.__version__},
    }
    print(f"data: {n} x {dim} clustered", flush=True)
    data, centres = clustered(n, dim, max(10, n // 100), seed=1)
    queries = queries_near(centres, args.queries, seed=2)
    buckets = np.arange(n) % 100
    t = time.perf_counter()
    truth = exact_top_k(data, queries, K)
    brute_single = len(queries[:50]) / max(1e-9, _time(lambda: [exact_top_k(data, q[None], K) for q in queries[:50]]))
    out["ground_truth_seconds"] = time.perf_counter() - t
    out["numpy_brute_force_single_qps"] = brute_single

    # --- the shard, end to end (fsynced store + graph) -------------------------------------
    workdir = Path(tempfile.mkdtemp(prefix="bench-index-"))
    settings = ShardSettings(dtype=args.dtype, connectivity=m, expansion_add=ef_add, expansion_search=efs[0], threads=0)
    shard = Shard(0, workdir / "shard-0", settings)
    print("shard upsert", flush=True)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        items = [
            Item(
                f"id-{i}",
                MODALITY_IMAGE if i % 2 == 0 else MODALITY_TEXT,
                data[i],
                {"bucket": str(buckets[i])},
            )
            for i in range(start, min(n, start + BATCH))
        ]
        shard.upsert("bench-model", items)
    shard_add = time.perf_counter() - started
    out["add"] = {"shard_items_per_s": n / shard_add, "shard_seconds": shard_add}
    index = shard._index  # the bench is single-threaded, so reading the graph directly is safe here
    assert index is not None
    out["memory"] = {"usearch_bytes_per_vector": index.memory_usage / n}

    # --- raw add on the same first vectors, then FAISS on all -----------------------------
    raw_n = min(n, RAW_ADD_N)
    raw = Index(ndim=dim, metric=settings.precision.metric, dtype=args.dtype, connectivity=m, expansion_add=ef_add)
    started = time.perf_counter()
    raw.add(np.arange(raw_n), data[:raw_n], threads=threads)
    out["add"]["usearch_raw_first_items_per_s"] = raw_n / (time.perf_counter() - started)
    del raw
    faiss.omp_set_num_threads(threads)
    fidx = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    fidx.hnsw.efConstruction = ef_add
    seconds = _time(lambda: fidx.add(data[:raw_n]))
    out["add"]["faiss_first_items_per_s"] = raw_n / seconds
    out["add"]["first_items"] = raw_n
    if n > raw_n:
        seconds += _time(lambda: fidx.add(data[raw_n:]))
    out["add"]["faiss_items_per_s"] = n / seconds
    out["memory"]["faiss_bytes_per_vector"] = len(faiss.serialize_index(fidx)) / n

    # --- recall and QPS by ef ---------------------------------------------------------------
    print("search sweep", flush=True)
    rows = []
    for ef in efs:
        index.expansion_search = ef  # type: ignore[misc]  # usearch's setter is invisible to mypy
        fidx.hnsw.efSearch = ef
        row: dict[str, Any] = {"ef": ef}
        found, stats = timed_loop(queries, lambda q: index.search(q, K, threads=1).keys.tolist())
        row["usearch_single"] = {**stats, "recall": recall(found, truth)}
        batch_seconds = _time(lambda: index.search(queries, K, threads=threads))
        row["usearch_batch_qps"] = len(queries) / batch_seconds
        found, stats = timed_loop(
            queries,
            lambda q: [int(h.id[3:]) for h in shard.search(SearchQuery(q, K)).hits],
        )
        row["shard_single"] = {**stats, "recall": recall(found, truth)}
        faiss.omp_set_num_threads(1)
        found, stats = timed_loop(queries, lambda q: fidx.search(q[None], K)[1][0].tolist())
        row["faiss_single"] = {**stats, "recall": recall(found, truth)}
        faiss.omp_set_num_threads(threads)
        batch_seconds = _time(lambda: fidx.search(queries, K))
        row["faiss_batch_qps"] = len(queries) / batch_seconds
        rows.append(row)
        print(f"  ef={ef}: usearch {row['usearch_single']}, faiss {row['faiss_single']}", flush=True)
    out["search"] = rows

    # --- filtered search (through the shard's filter, over-fetch and widening) -----------
    ef = args.filter_ef
    index.expansion_search = ef  # type: ignore[misc]
    fidx.hnsw.efSearch = ef
    filtered = []
    for label, values in (("10%", [str(b) for b in range(10)]), ("1%", ["7"])):
        subset = np.flatnonzero(np.isin(buckets, [int(v) for v in values]))
        sub_truth = exact_top_k(data, queries, K, subset)
        flt = make_filter(0, [("bucket", values)], [], [])
        examined: list[int] = []

        def run(q: np.ndarray, flt: Any = flt, examined: list[int] = examined) -> list[int]:
            result = shard.search(SearchQuery(q, K, flt))
            examined.append(result.examined)
            return [int(h.id[3:]) for h in result.hits]

        found, stats = timed_loop(queries, run)
        entry: dict[str, Any] = {
            "selectivity": label,
            "ef": ef,
            "shard": {**stats, "recall": recall(found, sub_truth), "mean_examined": float(np.mean(examined))},
        }
        selector = faiss.IDSelectorBatch(subset.astype(np.int64))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)  # type: ignore[attr-defined]

        def run_faiss(q: np.ndarray, params: Any = params) -> list[int]:
            return [int(i) for i in fidx.search(q[None], K, params=params)[1][0]]

        faiss.omp_set_num_threads(1)
        found, stats = timed_loop(queries, run_faiss)
        faiss.omp_set_num_threads(threads)
        entry["faiss_selector"] = {**stats, "recall": recall(found, sub_truth)}
        filtered.append(entry)
        print(f"  filter {label}: {entry}", flush=True)
    out["filtered"] = filtered

    # --- snapshot save and load -----------------------------------------------------------
    print("snapshot", flush=True)
    written = shard.snapshot()
    (snapshot_file,) = list((workdir / "shard-0").glob("index-*.usearch"))
    out["snapshot"] = {"save_seconds": written[1], "bytes_per_vector": snapshot_file.stat().st_size / n}
    shard.close(snapshot=False)
    started = time.perf_counter()
    reopened = Shard(0, workdir / "shard-0", settings)
    out["snapshot"]["shard_open_seconds"] = time.perf_counter() - started
    reopened.close(snapshot=False)
    loaded = Index(ndim=dim, metric=settings.precision.metric, dtype=args.dtype)
    started = time.perf_counter()
    loaded.load(str(snapshot_file))
    out["snapshot"]["usearch_load_seconds"] = time.perf_counter() - started
    del loaded
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _time(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


def markdown(r: dict[str, Any]) -> str:
    """The results as the Markdown tables of the notes."""
    lines = [
        f"# Index benchmark: {r['n']:,} x {r['dim']}-d clustered vectors, {r['dtype']}, "
        f"M={r['connectivity']}, ef_add={r['expansion_add']}",
        "",
        f"{r['machine']['cpus']} CPUs ({r['machine']['processor']}); usearch {r['versions']['usearch']}, "
        f"faiss-cpu {r['versions']['faiss']}; {r['queries']} queries, recall@{K} against exact search.",
        "",
        "## Add throughput",
        "",
        "| what | items/s |",
        "|---|---:|",
        f"| shard upsert, batches of {BATCH} (SQLite commit with fsync + graph) "
        f"| {r['add']['shard_items_per_s']:,.0f} |",
        f"| raw USearch, first {r['add']['first_items']:,} | {r['add']['usearch_raw_first_items_per_s']:,.0f} |",
        f"| FAISS HNSW, first {r['add']['first_items']:,} | {r['add']['faiss_first_items_per_s']:,.0f} |",
        f"| FAISS HNSW, all {r['n']:,} | {r['add']['faiss_items_per_s']:,.0f} |",
        "",
        "## Search by expansion_search (ef)",
        "",
        "| ef | USearch recall | USearch QPS (p50 ms) | USearch batched QPS | shard QPS (p50 ms) | "
        "FAISS recall | FAISS QPS (p50 ms) | FAISS batched QPS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["search"]:
        u, s, f = row["usearch_single"], row["shard_single"], row["faiss_single"]
        lines.append(
            f"| {row['ef']} | {u['recall']:.3f} | {u['qps']:,.0f} ({u['p50_ms']:.2f}) "
            f"| {row['usearch_batch_qps']:,.0f} | {s['qps']:,.0f} ({s['p50_ms']:.2f}) | {f['recall']:.3f} "
            f"| {f['qps']:,.0f} ({f['p50_ms']:.2f}) | {row['faiss_batch_qps']:,.0f} |"
        )
    lines += [
        "",
        f"numpy brute force, single query: {r['numpy_brute_force_single_qps']:,.0f} QPS.",
        "",
        "## Filtered search (metadata clause, through the shard)",
        "",
        "| selectivity | ef | shard recall | shard QPS (p50 / p99 ms) | mean candidates examined | "
        "FAISS + IDSelector recall | FAISS QPS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in r["filtered"]:
        s, fs = f["shard"], f["faiss_selector"]
        lines.append(
            f"| {f['selectivity']} | {f['ef']} | {s['recall']:.3f} "
            f"| {s['qps']:,.0f} ({s['p50_ms']:.2f} / {s['p99_ms']:.2f}) "
            f"| {s['mean_examined']:,.0f} | {fs['recall']:.3f} | {fs['qps']:,.0f} |"
        )
    snap, mem = r["snapshot"], r["memory"]
    lines += [
        "",
        "## Memory and snapshots",
        "",
        "| what | value |",
        "|---|---:|",
        f"| USearch memory per vector | {mem['usearch_bytes_per_vector']:,.0f} B |",
        f"| FAISS HNSW serialised size per vector | {mem['faiss_bytes_per_vector']:,.0f} B |",
        f"| snapshot file per vector | {snap['bytes_per_vector']:,.0f} B |",
        f"| snapshot save (serialise, CRC, fsync, rename, record) | {snap['save_seconds']:.2f} s |",
        f"| shard open (CRC check, load, catalog from SQLite, verify) | {snap['shard_open_seconds']:.2f} s |",
        f"| raw USearch load of the snapshot | {snap['usearch_load_seconds']:.2f} s |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Parse arguments, run the benchmark and write bench/results/index.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="vectors to index")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dtype", default="f32", choices=tuple(PRECISIONS))
    parser.add_argument("--connectivity", type=int, default=16, help="M, for both libraries")
    parser.add_argument("--expansion-add", type=int, default=128, help="efConstruction, for both")
    parser.add_argument("--efs", default="16,32,64,128,256", help="expansion_search values to sweep")
    parser.add_argument("--filter-ef", type=int, default=64, help="expansion_search of the filtered runs")
    parser.add_argument("--quick", action="store_true", help="20k vectors and 200 queries")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = min(args.n, 20_000), min(args.queries, 200)
    results = bench(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index.json").write_text(json.dumps(results, indent=2))
    (args.out / "index.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
