"""The HTTP/JSON service against the gateway's own gRPC API, on the same cluster in the same run.

A local cluster (2 shards, 1 replica) with the HTTP service in front is filled with a rendered gallery,
half through gRPC Ingest and half through HTTP NDJSON ingest (the ratio of their throughputs is the cost
of the HTTP path, with the encoding both pay). Then the same text searches go through the SDK (gRPC)
and through POST /v1/search (one keep-alive connection per client thread), alone and with 8 clients,
and thumbnails are fetched cold (made) and warm (from the cache). Writes bench/results/http.{json,md}.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import QUERIES, concurrent, percentiles  # noqa: E402

from crossmodal.client import Client, Item  # noqa: E402
from crossmodal.cluster import DEFAULT_BUNDLE, ClusterSpec, LocalCluster  # noqa: E402
from crossmodal.scenes import Split, gallery_items, write_gallery  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class Connection(threading.local):
    """One keep-alive HTTP connection per thread, as a browser or an HTTP client library keeps one."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> bytes:
        """POST and return the body; fails on any status but 200."""
        self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return data

    def get(self, path: str) -> bytes:
        """GET and return the body; fails on any status but 200."""
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return data


def main() -> int:
    """Run the benchmark and write bench/results/http.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=400, help="gallery images (half ingested over each API)")
    parser.add_argument("--quick", action="store_true", help="100 images, fewer searches")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    args = parser.parse_args()
    if args.quick:
        args.images = 100
    per_client = 25 if args.quick else 100
    out: dict[str, Any] = {"images": args.images, "shards": 2}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "gallery"
        records = gallery_items(args.images, seed=5, split=Split.VAL)
        write_gallery(root, records, size=128)
        paths = [root / "images" / f"{r.id}.png" for r in records]
        spec = ClusterSpec.on_free_ports(
            Path(tmp) / "c", shards=2, replicas=1, bundle=args.bundle, http_port=0, media_roots=(root,)
        )
        with LocalCluster(spec, say=print) as cluster, Client(cluster.address) as client:
            assert cluster.http is not None
            host, port = "127.0.0.1", cluster.http.port
            half = len(paths) // 2
            started = time.perf_counter()
            acks = list(client.ingest(Item.from_image_file(p.stem, p, {"path": str(p)}) for p in paths[:half]))
            grpc_seconds = time.perf_counter() - started
            assert all(a.ok for a in acks)
            lines = b"".join(
                json.dumps(
                    {"id": p.stem, "image": base64.b64encode(p.read_bytes()).decode(), "metadata": {"path": str(p)}}
                ).encode()
                + b"\n"
                for p in paths[half:]
            )
            started = time.perf_counter()
            replies = Connection(host, port).post("/v1/items:ingest", lines, "application/x-ndjson").splitlines()
            http_seconds = time.perf_counter() - started
            assert len(replies) == len(paths) - half
            out["ingest"] = {
                "grpc_items_per_s": half / grpc_seconds,
                "http_items_per_s": (len(paths) - half) / http_seconds,
            }
            print(f"ingest: {out['ingest']}")

            counter = iter(range(10**9))
            connection = Connection(host, port)

            def grpc_search() -> None:
                client.search(QUERIES[next(counter) % len(QUERIES)], k=10, target="image")

            def http_search() -> None:
                query = QUERIES[next(counter) % len(QUERIES)]
                connection.post("/v1/search", json.dumps({"text": query, "k": 10, "target": "MODALITY_IMAGE"}).encode())

            for fn in (grpc_search, http_search):  # warm up both paths
                for _ in range(20):
                    fn()
            # Alternate the two paths, so that load from elsewhere on the machine falls on both alike.
            search: dict[str, Any] = {}
            for clients in (1, 8):
                for name, fn in (("grpc", grpc_search), ("http", http_search)):
                    search[f"{name}_{clients}"] = concurrent(fn, clients, per_client)
            out["search"] = search
            print(f"search: {json.dumps(search, indent=1)}")

            cold, warm = [], []
            for p in paths[: min(50, len(paths))]:
                for bucket in (cold, warm):
                    started = time.perf_counter()
                    connection.get(f"/v1/items/{p.stem}/thumbnail")
                    bucket.append(time.perf_counter() - started)
            out["thumbnail"] = {"cold": percentiles(cold), "warm": percentiles(warm)}
            print(f"thumbnails: {out['thumbnail']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http.json").write_text(json.dumps(out, indent=2))
    s = out["search"]
    md = [
        "## HTTP/JSON service vs gRPC (bench_http.py)",
        "",
        f"{args.images} rendered images (128 px), 2 shards, built-in model; text searches, K=10.",
        "",
        "| Path | clients | QPS | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        *[
            f"| {name.split('_')[0]} | {v['clients']} | {v['qps']:.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |"
            for name, v in s.items()
        ],
        "",
        f"HTTP/gRPC: p50 latency x{s['http_1']['p50_ms'] / s['grpc_1']['p50_ms']:.2f} with one client, "
        f"throughput x{s['http_8']['qps'] / s['grpc_8']['qps']:.2f} with 8.",
        f"Ingest (encoding included): gRPC {out['ingest']['grpc_items_per_s']:.0f} items/s, HTTP NDJSON "
        f"{out['ingest']['http_items_per_s']:.0f} items/s.",
        f"Thumbnails (256 px JPEG): cold p50 {out['thumbnail']['cold']['p50_ms']:.2f} ms, "
        f"cached p50 {out['thumbnail']['warm']['p50_ms']:.2f} ms.",
    ]
    (RESULTS / "http.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
