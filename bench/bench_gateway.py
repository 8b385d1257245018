"""End-to-end gateway benchmark: search latency under concurrency, fan-out overhead, ingest throughput.

A local cluster (4 shards, 1 replica) is filled with N clustered vectors written straight to the shards
(routed as the gateway routes), so that search figures do not wait for N images to be encoded. A fifth
index process holds all N vectors in one shard: the baseline for the fan-out overhead. Ingest is measured
end to end on rendered scenes and compared with the raw image tower in process at batch 32.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossmodal.bundle import ModelBundle  # noqa: E402
from crossmodal.client import Client, Item  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster  # noqa: E402
from crossmodal.scenes import Split, gallery_items, render_scene  # noqa: E402
from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2  # noqa: E402
from services.common.placement import Placement  # noqa: E402
from tests.support import ServiceProcess  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QUERIES = [
    "a red circle",
    "a large blue square on the left",
    "two green triangles",
    "a small yellow star",
    "a purple heart above an orange cross",
    "a tiny white diamond on a striped background",
]


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """N unit vectors around 100 random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    x = centres[rng.integers(0, 100, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def load(
    address: str,
    shard_of_item: dict[int, list[int]] | None,
    vectors: np.ndarray,
    model_id: str,
    shard: int | None = None,
) -> None:
    """Upsert vectors into shards of one process, 1,000 per call."""
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        groups = shard_of_item or {shard or 0: list(range(len(vectors)))}
        for number, positions in groups.items():
            for start in range(0, len(positions), 1000):
                chunk = positions[start : start + 1000]
                stub.UpsertVectors(
                    index_pb2.UpsertVectorsRequest(
                        shard=number,
                        model_id=model_id,
                        items=[
                            index_pb2.IndexItem(
                                id=f"v{p}",
                                vector=vectors[p].tolist(),
                                modality=types_pb2.MODALITY_IMAGE,
                                metadata={"n": str(p)},
                            )
                            for p in chunk
                        ],
                    ),
                    timeout=120,
                )


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def concurrent(fn, clients: int, per_client: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Run fn() per_client times on each of `clients` threads; latency percentiles and throughput.

    Calls the gateway sheds (RESOURCE_EXHAUSTED: more searches in flight than it admits) are counted
    apart and left out of the latencies and the throughput.
    """
    latencies: list[float] = []
    shed = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal shed
        mine, refused = [], 0
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                fn()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                    raise
                refused += 1
                continue
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            shed += refused

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "shed": shed,
        "qps": len(latencies) / wall,
        **percentiles(latencies),
    }


def main() -> int:
    """Run the benchmark and write bench/results/gateway.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--images", type=int, default=512, help="images ingested end to end")
    parser.add_argument("--quick", action="store_true", help="10k vectors, 128 images, fewer queries")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    args = parser.parse_args()
    if args.quick:
        args.n, args.images = 10_000, 128
    per_client = 10 if args.quick else 40
    out: dict[str, object] = {"n": args.n, "shards": 4, "bundle": str(args.bundle)}
    with tempfile.TemporaryDirectory() as tmp:
        spec = ClusterSpec.on_free_ports(
            Path(tmp) / "c",
            shards=4,
            replicas=1,
            bundle=args.bundle,
            env={"CROSSMODAL_INDEX_SNAPSHOT_INTERVAL_SECONDS": "3600"},
        )
        with LocalCluster(spec, say=print) as cluster, Client(cluster.address) as client:
            info = client.stats()
            vectors = clustered(args.n, info.dim)
            groups: dict[int, list[int]] = {}
            for p in range(args.n):
                groups.setdefault(Placement(4).shard_of(f"v{p}"), []).append(p)
            started = time.perf_counter()
            for shard in range(4):
                load(cluster.by_name(f"index-{shard}-0").address, {shard: groups[shard]}, vectors, info.model_id)
            out["load_seconds"] = time.perf_counter() - started
            print(f"loaded {args.n} vectors in {out['load_seconds']:.1f}s")
            single = ServiceProcess(
                "services.index",
                Path(tmp) / "single",
                {
                    "CROSSMODAL_INDEX_DATA_DIR": str(Path(tmp) / "single-data"),
                    "CROSSMODAL_INDEX_SNAPSHOT_INTERVAL_SECONDS": "3600",
                },
            ).wait_ready()
            try:
                load(single.address, None, vectors, info.model_id)
                rng = np.random.default_rng(1)
                probes = [vectors[i] for i in rng.integers(0, args.n, 200)]
                counter = iter(range(10**9))

                def gateway_vector() -> None:
                    client.search(vector=probes[next(counter) % len(probes)].tolist(), k=10)

                with grpc.insecure_channel(single.address) as channel:
                    stub = index_pb2_grpc.IndexServiceStub(channel)

                    def direct() -> None:
                        stub.SearchShard(
                            index_pb2.SearchShardRequest(vector=probes[next(counter) % len(probes)].tolist(), k=10),
                            timeout=10,
                        )

                    for fn in (direct, gateway_vector):  # warm up both paths
                        for _ in range(20):
                            fn()
                    direct_lat = concurrent(direct, 1, per_client * 5)
                    fanout_lat = concurrent(gateway_vector, 1, per_client * 5)
                out["fanout"] = {
                    "direct_one_shard": direct_lat,
                    "gateway_4_shards": fanout_lat,
                    "overhead_p50_ms": fanout_lat["p50_ms"] - direct_lat["p50_ms"],
                }
                print("fan-out:", out["fanout"])
            finally:
                single.terminate()

            texts = iter(range(10**9))
            search_rows = []
            for clients in (1, 16, 64):
                row = concurrent(
                    lambda: client.search(QUERIES[next(texts) % len(QUERIES)], k=10, target="image"),
                    clients,
                    per_client if clients > 1 else per_client * 3,
                )
                search_rows.append(row)
                print("text->image search:", row)
            out["text_to_image_search"] = search_rows

            scenes = gallery_items(args.images, seed=3, split=Split.VAL)
            pngs = []
            for item in scenes:
                buffer = io.BytesIO()
                render_scene(item.spec, 128).save(buffer, "PNG")
                pngs.append(buffer.getvalue())
            started = time.perf_counter()
            acks = list(client.ingest(Item(f"img{i}", image=data) for i, data in enumerate(pngs)))
            ingest_rate = len(pngs) / (time.perf_counter() - started)
            assert all(a.ok for a in acks), [a for a in acks if not a.ok][:3]
    bundle = ModelBundle.open(args.bundle, towers=("image",))
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    bundle.encode_images(images[:32])
    started = time.perf_counter()
    for start in range(0, len(images), 32):
        bundle.encode_images(images[start : start + 32])
    raw_rate = len(images) / (time.perf_counter() - started)
    out["ingest"] = {
        "images": len(pngs),
        "end_to_end_images_per_s": ingest_rate,
        "raw_tower_images_per_s_batch32": raw_rate,
        "ratio": ingest_rate / raw_rate,
    }
    print("ingest:", out["ingest"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(out, indent=2))
    fan = out["fanout"]  # type: ignore[assignment]
    ing = out["ingest"]  # type: ignore[assignment]
    md = [
        f"## Gateway ({args.n:,} vectors over 4 shards, bundle {args.bundle.name})",
        "",
        "| text->image search | QPS | p50 ms | p99 ms | shed (RESOURCE_EXHAUSTED) |",
        "|---|---|---|---|",
    ]
    md += [
        f"| {r['clients']} clients | {r['qps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{r['shed']} of {r['shed'] + r['requests']} |"
        for r in search_rows
    ]
    md += [
        "",
        "| fan-out (vector query, k=10, 1 client) | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| direct search of one shard holding all vectors | {fan['direct_one_shard']['p50_ms']:.2f} | "
        f"{fan['direct_one_shard']['p99_ms']:.2f} |",
        f"| gateway over 4 shards | {fan['gateway_4_shards']['p50_ms']:.2f} | "
        f"{fan['gateway_4_shards']['p99_ms']:.2f} |",
        f"| **overhead p50** | **{fan['overhead_p50_ms']:.2f}** (target <= 1 ms) | |",
        "",
        f"Ingest end to end: {ing['end_to_end_images_per_s']:.1f} images/s vs raw image tower "
        f"{ing['raw_tower_images_per_s_batch32']:.1f} images/s at batch 32 in process: "
        f"**{100 * ing['ratio']:.0f}%** (target >= 80%).",
        "",
    ]
    (RESULTS / "gateway.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
