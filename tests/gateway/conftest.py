"""Fixtures of the end-to-end tests: a local cluster on loopback, filled with a small generated gallery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crossmodal.cli.ingest import wait_searchable
from crossmodal.client import Ack, Client, Item
from crossmodal.cluster import ClusterSpec, LocalCluster
from crossmodal.scenes import Split, gallery_items, write_gallery
from tests.encoder.conftest import bundle_dir  # noqa: F401 - the shared bundle fixture

GALLERY_SIZE = 40


def cluster_spec(data_dir: Path, bundle: Path, shards: int = 2, replicas: int = 2, **env: str) -> ClusterSpec:
    """A cluster on free loopback ports."""
    return ClusterSpec.on_free_ports(data_dir, shards=shards, replicas=replicas, bundle=bundle, gateway_env=dict(env))


@pytest.fixture(scope="session")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """A small validation gallery rendered once: records with id, path and caption."""
    out = tmp_path_factory.mktemp("gallery")
    items = gallery_items(GALLERY_SIZE, seed=11, split=Split.VAL)
    write_gallery(out, items, size=96)
    return [{"id": i.id, "path": str(out / "images" / f"{i.id}.png"), "caption": i.caption} for i in items]


def gallery_items_for(gallery: list[dict[str, str]]) -> list[Item]:
    """Image and caption items of the gallery, with metadata to filter on."""
    items = []
    for n, record in enumerate(gallery):
        parity = "even" if n % 2 == 0 else "odd"
        items.append(
            Item.from_image_file(record["id"], record["path"], {"parity": parity, "kind": "image"}, tags=["scene"])
        )
        items.append(
            Item(
                record["id"] + "#caption",
                text=record["caption"],
                metadata={"parity": parity, "kind": "caption", "text": record["caption"]},
            )
        )
    return items


def ingest_readable(cluster: LocalCluster, items: list[Item]) -> list[Ack]:
    """Ingest `items` and return once every replica can read them (the tests read with other clients).

    With the write log an acknowledged write is durable at once but applied by the replicas a moment later;
    a client reads its own writes, other clients eventually. This waits as `crossmodal ingest` does.
    """
    with Client(cluster.address) as client:
        acks = list(client.ingest(items))
        assert wait_searchable(client), "the replicas did not apply the writes within 2 minutes"
    return acks


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    bundle_dir: Path,  # noqa: F811
    gallery: list[dict[str, str]],
) -> Iterator[LocalCluster]:
    """2 shards x 2 replicas with the gallery ingested; shared by the read-only tests."""
    spec = cluster_spec(tmp_path_factory.mktemp("cluster"), bundle_dir)
    with LocalCluster(spec) as running:
        acks = ingest_readable(running, gallery_items_for(gallery))
        assert all(a.ok for a in acks), [a for a in acks if not a.ok][:3]
        yield running


@pytest.fixture(scope="session")
def scratch_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    bundle_dir: Path,  # noqa: F811
) -> Iterator[LocalCluster]:
    """An empty 2 shards x 1 replica cluster for the tests that write; the shared `cluster` is read-only."""
    with LocalCluster(cluster_spec(tmp_path_factory.mktemp("scratch"), bundle_dir, replicas=1)) as running:
        yield running


@pytest.fixture()
def client(cluster: LocalCluster) -> Iterator[Client]:
    """A client of the shared cluster's gateway."""
    with Client(cluster.address) as c:
        yield c


@pytest.fixture()
def scratch_client(scratch_cluster: LocalCluster) -> Iterator[Client]:
    """A client of the cluster the writing tests share."""
    with Client(scratch_cluster.address) as c:
        yield c
