"""End-to-end search and ingest through the gateway of a real local cluster."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from crossmodal.client import Client, Item, build_filter
from crossmodal.cluster import LocalCluster
from crossmodal.v1 import types_pb2
from services.common.placement import Placement
from tests.support import metric_value, metrics_text, replica_items


def _stored_vectors(cluster: LocalCluster, shards: int = 2) -> dict[str, tuple[np.ndarray, str]]:
    """Every stored vector, read straight from the first replica of each shard."""
    return {
        item.id: (np.asarray(item.vector, dtype=np.float32), "image" if item.modality == 1 else "text")
        for shard in range(shards)
        for item in replica_items(cluster.by_name(f"index-{shard}-0").address, shard)
    }


def test_every_direction_returns_the_wanted_modality(client: Client, gallery: list[dict[str, str]]) -> None:
    image = Path(gallery[0]["path"]).read_bytes()
    cases = {
        "text->image": client.search(gallery[0]["caption"], k=5, target="image"),
        "image->image": client.search(image=image, k=5, target="image"),
        "image->text": client.search(image=image, k=5, target="text"),
        "text->text": client.search(gallery[0]["caption"], k=5, target="text"),
    }
    for name, result in cases.items():
        wanted = name.split("->")[1]
        assert len(result.hits) == 5, name
        assert {h.modality for h in result.hits} == {wanted}, name
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True), name
        assert result.partial_shards == [] and result.model_id
    # The same text as a stored caption finds that caption first, with cosine ~1.
    top = cases["text->text"].hits[0]
    assert top.id == gallery[0]["id"] + "#caption" and top.score > 0.999
    # The same image bytes find the stored image first.
    assert cases["image->image"].hits[0].id == gallery[0]["id"]
    assert cases["image->image"].hits[0].metadata == {"parity": "even", "kind": "image"}


def test_more_like_this_leaves_the_item_out(client: Client, gallery: list[dict[str, str]]) -> None:
    result = client.search(like_id=gallery[3]["id"], k=4, target="image")
    assert len(result.hits) == 4 and gallery[3]["id"] not in [h.id for h in result.hits]
    with pytest.raises(grpc.RpcError) as info:
        client.search(like_id="no-such-item", k=4)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_merge_equals_brute_force_over_all_shards(client: Client, cluster: LocalCluster) -> None:
    stored = _stored_vectors(cluster)
    assert len(stored) == 80
    ids = sorted(stored)
    matrix = np.stack([stored[i][0] for i in ids])
    rng = np.random.default_rng(5)
    for _ in range(5):
        query = rng.standard_normal(matrix.shape[1]).astype(np.float32)
        query /= np.linalg.norm(query)
        scores = matrix @ query
        order = sorted(range(len(ids)), key=lambda n: (-scores[n], ids[n]))[:10]
        result = client.search(vector=query.tolist(), k=10, exact=True)
        assert [h.id for h in result.hits] == [ids[n] for n in order]
        assert np.allclose([h.score for h in result.hits], scores[order], atol=1e-4)


def test_filters_apply_across_shards(client: Client, gallery: list[dict[str, str]]) -> None:
    result = client.search(gallery[0]["caption"], k=10, filter=build_filter({"parity": "odd", "kind": "image"}))
    assert len(result.hits) == 10
    assert all(h.metadata["parity"] == "odd" and h.modality == "image" for h in result.hits)
    tagged = client.search(gallery[0]["caption"], k=50, filter=build_filter(tags_all=["scene"]))
    assert len(tagged.hits) == 40 and all(h.modality == "image" for h in tagged.hits)


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"text": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ({"text": "x" * 5000}, grpc.StatusCode.INVALID_ARGUMENT, "CROSSMODAL_MAX_TEXT_CHARS"),
        ({"text": "red", "k": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "CROSSMODAL_MAX_K"),
        ({"vector": [1.0, 2.0]}, grpc.StatusCode.INVALID_ARGUMENT, "dimension"),
        ({"image": b"not an image"}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
    ],
)
def test_bad_queries_get_a_clear_status(client: Client, kwargs: dict, code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.search(**kwargs)
    assert info.value.code() == code  # type: ignore[attr-defined]
    assert fragment in info.value.details()  # type: ignore[attr-defined]


def test_ingest_rejects_bad_items_alone_and_replaces_resent_ids(
    scratch_client: Client, gallery: list[dict[str, str]]
) -> None:
    # On a cluster of its own: the shared one stays exactly as the gallery left it for the other tests.
    client = scratch_client
    items = [
        Item("fresh-1", text="a small orange heart", metadata={"v": "1"}),
        Item("", text="no id"),
        Item("broken-image", image=b"\x89PNG\r\n\x1a\n garbage"),
        Item("empty-text", text=""),
        Item("x" * 300, text="id too long"),
        Item("fresh-2", image=Path(gallery[5]["path"]).read_bytes()),
    ]
    acks = {a.id: a for a in client.ingest(items)}
    assert acks["fresh-1"].ok and acks["fresh-2"].ok
    for bad in ("", "broken-image", "empty-text", "x" * 300):
        assert acks[bad].code == grpc.StatusCode.INVALID_ARGUMENT and acks[bad].message
    assert acks["fresh-1"].shard == Placement(2).shard_of("fresh-1")
    (again,) = list(client.ingest([Item("fresh-1", text="a small orange heart", metadata={"v": "2"})]))
    assert again.ok
    found, missing = client.get(["fresh-1", "fresh-2", "never"])
    assert {h.id: h.metadata for h in found} == {"fresh-1": {"v": "2"}, "fresh-2": {}} and missing == ["never"]
    result = client.search("a small orange heart", k=80, target="text")
    assert [h.id for h in result.hits].count("fresh-1") == 1
    assert client.delete(["fresh-1", "fresh-2", "never"]) == 2
    assert client.get(["fresh-1"]) == ([], ["fresh-1"])
    assert "fresh-1" not in [h.id for h in client.search("a small orange heart", k=80).hits]


def test_stats_count_every_replica(client: Client) -> None:
    stats = client.stats()
    assert stats.total_count == 80 and sorted(stats.shards) == [0, 1]
    for replicas in stats.shards.values():
        assert len(replicas) == 2 and all(r.healthy for r in replicas)
        assert replicas[0].count == replicas[1].count


def _shard_searches(cluster: LocalCluster) -> float:
    """SearchShard calls every index process has served, whatever their status."""
    total = 0.0
    for process in cluster.processes:
        if process.module == "services.index":
            text = metrics_text(process.metrics_port)
            total += sum(
                metric_value(text, "crossmodal_rpc_requests_total", method="SearchShard", code=code.name)
                for code in grpc.StatusCode
            )
    return total


def test_an_oversized_filter_is_refused_by_the_gateway_before_any_shard_is_asked(
    client: Client, cluster: LocalCluster
) -> None:
    huge = types_pb2.Filter(clauses=[types_pb2.FilterClause(key=f"k{i}", any_of=["v"]) for i in range(100_000)])
    before = _shard_searches(cluster)
    with pytest.raises(grpc.RpcError) as info:
        client.search("a red circle", filter=huge)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert info.value.details() == "more than 16 filter clauses"  # type: ignore[attr-defined]
    assert _shard_searches(cluster) == before
    # The same limit as the shards': 16 clauses pass and are answered.
    ok = types_pb2.Filter(clauses=[types_pb2.FilterClause(key=f"k{i}", any_of=["v"]) for i in range(16)])
    assert client.search("a red circle", filter=ok).hits == []
    assert _shard_searches(cluster) >= before + 2  # one replica of each shard (or more, if a read was hedged)
