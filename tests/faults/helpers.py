"""Shared pieces of the kill -9 fault tests: a small cluster, verifiable text items, health polls, checks."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc

from crossmodal.client import Ack, Client, IngestJournal, Item
from crossmodal.cluster import ClusterSpec, LocalCluster
from tests.support import wait_for

# The gateway's CROSSMODAL_GATEWAY_MAX_BATCH: the most ids one Get may ask for.
GET_BATCH = 1000
_WORDS = ("red", "green", "blue", "circle", "square", "triangle", "small", "large", "left", "right")


def fault_spec(
    data_dir: Path, bundle: Path, *, shards: int = 2, text_encoders: int = 1, **gateway_env: str
) -> ClusterSpec:
    """A cluster of `shards` x 1 replica on free loopback ports, with `text_encoders` text encoders."""
    return ClusterSpec.on_free_ports(
        data_dir, shards=shards, replicas=1, bundle=bundle, text_encoders=text_encoders, gateway_env=gateway_env
    )


def ingest_killing(
    cluster: LocalCluster, items: list[Item], journal: IngestJournal, victim: str, at: int
) -> tuple[list[Ack], str]:
    """Ingest `items`, kill -9 `victim` from a thread once `at` acks arrived: (the acks, how the stream ended)."""
    trigger, killed = threading.Event(), threading.Event()

    def killer() -> None:
        trigger.wait()
        cluster.kill(victim)
        killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    acks: list[Ack] = []
    ended = "complete"
    try:
        with Client(cluster.address) as client:
            for ack in client.ingest_resumable(items, journal):
                acks.append(ack)
                if len(acks) == at:
                    trigger.set()
    except grpc.RpcError as exc:
        ended = exc.code().name
    finally:
        trigger.set()
        thread.join(30)
    assert killed.is_set(), f"{victim} was not killed"
    return acks, ended


def checksum(text: str) -> str:
    """A short digest of an item's text, stored in its metadata so a read-back proves which text it was."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def text_items(prefix: str, count: int) -> list[Item]:
    """`count` short unique texts with ids `<prefix>-<n>` and metadata naming their prefix, index and checksum."""
    items = []
    for n in range(count):
        text = f"{_WORDS[n % 10]} {_WORDS[(n // 10) % 10]} note {prefix} {n}"
        items.append(Item(f"{prefix}-{n:05d}", text=text, metadata={"set": prefix, "n": str(n), "sum": checksum(text)}))
    return items


def cluster_is_whole(client: Client) -> bool:
    """Whether the gateway reaches every replica and the text encoder: a complete text search succeeds."""
    try:
        stats = client.stats(timeout=5)
        if not all(r.healthy for replicas in stats.shards.values() for r in replicas):
            return False
        client.search("a red circle", k=1, require_complete=True, timeout=5)
    except grpc.RpcError:
        return False
    return True


def wait_whole(address: str, timeout: float = 60.0) -> None:
    """Poll until the gateway at `address` serves complete answers again (it reconnects by itself)."""
    with Client(address) as client:
        wait_for(lambda: cluster_is_whole(client), timeout, "the gateway to reach every backend again", interval=0.1)


def stored(client: Client, ids: Sequence[str]) -> tuple[dict[str, dict[str, str]], list[str], int]:
    """Read `ids` back in batches: (metadata by id, missing ids, number of items returned)."""
    found: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    returned = 0
    for start in range(0, len(ids), GET_BATCH):
        hits, absent = client.get(ids[start : start + GET_BATCH], timeout=60)
        returned += len(hits)
        for hit in hits:
            found[hit.id] = hit.metadata
        missing.extend(absent)
    return found, missing, returned


def assert_stored_once(client: Client, items: Iterable[Item]) -> None:
    """Every item is stored exactly once (Get returns it once) with exactly its metadata."""
    expected = {item.id: dict(item.metadata) for item in items}
    found, missing, returned = stored(client, list(expected))
    assert not missing, f"{len(missing)} acknowledged items are missing, e.g. {missing[:5]}"
    assert returned == len(expected), f"Get returned {returned} items for {len(expected)} distinct ids"
    wrong = [i for i, meta in expected.items() if found.get(i) != meta]
    assert not wrong, f"{len(wrong)} items have other metadata, e.g. {wrong[0]}: {found.get(wrong[0])}"
