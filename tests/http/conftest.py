"""Fixtures of the HTTP service tests: a local cluster with the HTTP service, filled through its own NDJSON ingest."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossmodal.cluster import ClusterSpec, LocalCluster
from crossmodal.scenes import Split, gallery_items, write_gallery
from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture
from tests.http.helpers import HttpClient
from tests.support import ServiceProcess

GALLERY_SIZE = 16


@pytest.fixture(scope="session")
def http_gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """A small gallery rendered once (the media root, and records with id, path and caption)."""
    root = tmp_path_factory.mktemp("http-gallery")
    items = gallery_items(GALLERY_SIZE, seed=23, split=Split.VAL)
    write_gallery(root, items, size=96)
    return root, [{"id": i.id, "path": str(root / "images" / f"{i.id}.png"), "caption": i.caption} for i in items]


def gallery_lines(records: list[dict[str, str]]) -> bytes:
    """The gallery as an NDJSON ingest body: each image (with its path) and its caption."""
    lines = []
    for record in records:
        image = base64.b64encode(Path(record["path"]).read_bytes()).decode()
        lines.append({"id": record["id"], "image": image, "metadata": {"path": record["path"], "kind": "image"}})
        lines.append(
            {
                "id": record["id"] + "#caption",
                "text": record["caption"],
                "metadata": {"kind": "caption", "text": record["caption"]},
            }
        )
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture(scope="session")
def http_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    bundle_dir: Path,  # noqa: F811
    http_gallery: tuple[Path, list[dict[str, str]]],
) -> Iterator[LocalCluster]:
    """2 shards x 1 replica with the HTTP service in front, the gallery ingested through POST /v1/items:ingest."""
    root, records = http_gallery
    spec = ClusterSpec.on_free_ports(
        tmp_path_factory.mktemp("http-cluster"),
        shards=2,
        replicas=1,
        bundle=bundle_dir,
        http_port=0,
        media_roots=(root,),
    )
    with LocalCluster(spec) as running:
        client = HttpClient(running.http_url)
        status, _headers, body = client.request(
            "POST", "/v1/items:ingest", gallery_lines(records), "application/x-ndjson"
        )
        acks = [json.loads(line) for line in body.splitlines()]
        assert status == 200 and len(acks) == 2 * len(records), (status, body[:500])
        assert all(a.get("status", {}).get("code", 0) == 0 for a in acks), acks[:3]
        yield running


@pytest.fixture()
def http(http_cluster: LocalCluster) -> HttpClient:
    """A plain HTTP client of the cluster's HTTP service."""
    return HttpClient(http_cluster.http_url)


def shard_map(cluster: LocalCluster) -> str:
    """The cluster's shard map in CROSSMODAL_GATEWAY_SHARDS syntax (one replica per shard)."""
    shards = sorted(
        (p for p in cluster.processes if p.name.startswith("index-")), key=lambda p: int(p.name.split("-")[1])
    )
    return ";".join(p.address for p in shards)


@pytest.fixture(scope="session")
def strict_http(http_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A second HTTP service in front of the same gateway, with small limits and short timeouts to test them."""
    root = tmp_path_factory.mktemp("strict-media")
    process = ServiceProcess(
        "services.http",
        tmp_path_factory.mktemp("strict-http"),
        {
            "CROSSMODAL_HTTP_GATEWAY": http_cluster.address,
            "CROSSMODAL_HTTP_MAX_BODY_BYTES": str(STRICT_MAX_BODY),
            "CROSSMODAL_HTTP_MAX_HEADERS": "20",
            "CROSSMODAL_HTTP_MAX_HEADER_BYTES": "4096",
            "CROSSMODAL_HTTP_IDLE_TIMEOUT_SECONDS": "1",
            "CROSSMODAL_HTTP_BODY_TIMEOUT_SECONDS": "1",
            "CROSSMODAL_HTTP_MEDIA_ROOTS": str(root),
        },
    )
    try:
        yield process.wait_ready()
    finally:
        process.terminate()


STRICT_MAX_BODY = 64 * 1024
