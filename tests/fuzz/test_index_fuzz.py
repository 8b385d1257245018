"""Fuzz the internal IndexService: UpsertVectors, DeleteVectors, GetVectors, SearchShard, stats and snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from crossmodal.v1 import index_pb2
from tests.fuzz import catalog
from tests.fuzz.catalog import INVALID, NOT_FOUND, OK, PRECONDITION
from tests.fuzz.harness import SHARDS, Env, Outcome, call, raw_unary, run_case, uint32_read, varint_field
from tests.fuzz.strategies import (
    MAX_BATCH,
    MAX_K,
    MODALITIES,
    filter_ok,
    filters,
    id_ok,
    ids,
    k_values,
    metadata,
    metadata_ok,
    modality_ok,
    odd_text,
    tags,
    vector_ok,
    vectors,
)
from tests.fuzz.test_encoder_fuzz import invalid_utf8_item

# A batch of MAX_BATCH + 1 items has a long repr; Hypothesis warns about building it, uselessly here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
SERVICE = "/crossmodal.v1.IndexService/"
# Shard numbers: served, not served, the largest uint32 and negative ones (10-byte varints).
SHARD_NUMBERS = st.sampled_from([*SHARDS, *SHARDS, *SHARDS, 2, 7, 2**32 - 1, -1, -(2**31)])
RESPONSES = {
    "UpsertVectors": (index_pb2.UpsertVectorsRequest, index_pb2.UpsertVectorsResponse),
    "DeleteVectors": (index_pb2.DeleteVectorsRequest, index_pb2.DeleteVectorsResponse),
    "GetVectors": (index_pb2.GetVectorsRequest, index_pb2.GetVectorsResponse),
    "SearchShard": (index_pb2.SearchShardRequest, index_pb2.SearchShardResponse),
    "GetShardStats": (index_pb2.GetShardStatsRequest, index_pb2.GetShardStatsResponse),
    "CreateSnapshot": (index_pb2.CreateSnapshotRequest, index_pb2.CreateSnapshotResponse),
}


def _send(env: Env, method: str, request: Any, overrides: dict[int, int]) -> Outcome:
    """Send `request`, with varint fields appended by hand for values the Python API refuses (negatives)."""
    data = request.SerializeToString()
    for number, value in overrides.items():
        data += varint_field(number, value)
    return call(f"index.{method}", raw_unary(env, "index", SERVICE + method, RESPONSES[method][1]), data)


def _shard_fields(shard: int) -> tuple[int, dict[int, int]]:
    """(value for the proto field, hand-written overrides) of a possibly negative shard number."""
    return (shard, {}) if shard >= 0 else (0, {1: shard})


def _served(shard: int) -> bool:
    return uint32_read(shard) in SHARDS


def _index_items(env: Env) -> st.SearchStrategy[list[tuple[str, int, list[float], dict[str, str], list[str]]]]:
    item = st.tuples(ids(), MODALITIES, vectors(env.dim), metadata(), tags())
    return st.one_of(
        st.lists(item, min_size=1, max_size=4),
        st.lists(item, min_size=1, max_size=2).map(lambda xs: xs + [xs[0]]),
        st.just([]),
        st.builds(
            lambda n: [(f"fuzz-batch-{i}", 1, [1.0] * env.dim, {}, []) for i in range(n)],
            st.sampled_from([MAX_BATCH + 1]),
        ),
    )


def _item_ok(env: Env, item: tuple[str, int, list[float], dict[str, str], list[str]]) -> bool:
    item_id, modality, values, meta, tag_list = item
    return (
        id_ok(item_id)
        and modality_ok(modality, allow_unspecified=False)
        and vector_ok(values, env.dim)
        and metadata_ok(meta, tag_list)
    )


def test_upsert_vectors(env: Env) -> None:
    """Upserts to every shard number, of every model id, with bad ids, modalities, vectors and metadata."""
    model_ids = st.one_of(st.just(env.model_id), st.just(env.model_id), st.just(""), odd_text(3))
    cases = st.tuples(SHARD_NUMBERS, model_ids, _index_items(env))

    def body(case: tuple[int, str, list[Any]]) -> None:
        shard, model_id, items = case
        value, overrides = _shard_fields(shard)
        request = index_pb2.UpsertVectorsRequest(
            shard=value,
            model_id=model_id,
            items=[
                index_pb2.IndexItem(id=i, modality=m, vector=v, metadata=meta, tags=t) for i, m, v, meta, t in items
            ],
        )
        outcome = _send(env, "UpsertVectors", request, overrides)
        catalog.check_call("index", "UpsertVectors", "items", outcome.code, outcome.message)
        if not _served(shard):
            expected = NOT_FOUND
        elif not 1 <= len(items) <= MAX_BATCH or not model_id:
            expected = INVALID
        elif model_id != env.model_id:
            expected = PRECONDITION
        else:
            expected = OK
        assert outcome.code == expected, (shard, model_id, len(items), outcome.code, outcome.message)
        if outcome.code != OK:
            return
        statuses = outcome.response.statuses
        assert len(statuses) == len(items)
        stored: dict[str, Any] = {}
        for item, status in zip(items, statuses, strict=True):
            code = catalog.check_item("index", "UpsertVectors", "items", status.code, status.message)
            assert code == (OK if _item_ok(env, item) else INVALID), (item[0], item[1], status.message)
            if code == OK:
                stored[item[0]] = item  # a later copy of an id wins
        if stored:
            _check_stored(env, shard, stored)

    run_case(700, cases, body)


def _check_stored(env: Env, shard: int, stored: dict[str, Any]) -> None:
    request = index_pb2.GetVectorsRequest(shard=shard, ids=list(stored), include_vectors=True)
    reply = env.index.GetVectors(request, timeout=30)
    assert not reply.missing, reply.missing
    for got in reply.items:
        item_id, modality, values, meta, tag_list = stored[got.id]
        assert got.modality == modality and dict(got.metadata) == meta and list(got.tags) == tag_list
        np.testing.assert_array_equal(np.asarray(got.vector, np.float32), np.asarray(values, np.float32))


def _id_lists() -> st.SearchStrategy[list[str]]:
    return st.one_of(
        st.lists(ids(), min_size=1, max_size=5),
        st.just([]),
        st.builds(lambda n: [f"fuzz-{i}" for i in range(n)], st.sampled_from([MAX_BATCH, MAX_BATCH + 1])),
    )


def test_delete_and_get_vectors(env: Env) -> None:
    """Deletes and gets on every shard number with no, too many, empty, over-long and odd ids."""
    cases = st.tuples(st.sampled_from(["DeleteVectors", "GetVectors"]), SHARD_NUMBERS, _id_lists(), st.booleans())

    def body(case: tuple[str, int, list[str], bool]) -> None:
        method, shard, values, include = case
        value, overrides = _shard_fields(shard)
        if method == "DeleteVectors":
            request: Any = index_pb2.DeleteVectorsRequest(shard=value, ids=values)
        else:
            request = index_pb2.GetVectorsRequest(shard=value, ids=values, include_vectors=include)
        outcome = _send(env, method, request, overrides)
        catalog.check_call("index", method, "ids", outcome.code, outcome.message)
        expected = OK if 1 <= len(values) <= MAX_BATCH and all(id_ok(i) for i in values) else INVALID
        if not _served(shard):
            expected = NOT_FOUND
        assert outcome.code == expected, (method, shard, len(values), outcome.message)
        if outcome.code == OK and method == "GetVectors":
            found = {item.id for item in outcome.response.items} | set(outcome.response.missing)
            assert found == set(values)

    run_case(1000, cases, body)


def test_search_shard(env: Env) -> None:
    """Searches with bad vectors, K 0/huge/negative, unknown modalities, bad filters and other models."""
    model_ids = st.one_of(st.just(env.model_id), st.just(""), st.just("other-model"))
    cases = st.fixed_dictionaries(
        {
            "shard": SHARD_NUMBERS,
            "vector": vectors(env.dim),
            "k": k_values(MAX_K).filter(lambda k: k != 0) | st.just(0),
            "modality": MODALITIES,
            "filter": filters(),
            "exact": st.booleans(),
            "model_id": model_ids,
            "include_vectors": st.booleans(),
        }
    )

    def body(case: dict[str, Any]) -> None:
        value, overrides = _shard_fields(case["shard"])
        k = case["k"]
        if k < 0:
            overrides[3] = k
        request = index_pb2.SearchShardRequest(
            shard=value,
            vector=case["vector"],
            k=max(k, 0),
            modality=case["modality"],
            filter=case["filter"],
            exact=case["exact"],
            model_id=case["model_id"],
            include_vectors=case["include_vectors"],
        )
        outcome = _send(env, "SearchShard", request, overrides)
        catalog.check_call("index", "SearchShard", "query", outcome.code, outcome.message)
        if not _served(case["shard"]):
            expected = NOT_FOUND
        elif not (
            1 <= uint32_read(k) <= MAX_K
            and modality_ok(case["modality"], allow_unspecified=True)
            and filter_ok(case["filter"])
        ):
            expected = INVALID
        elif case["model_id"] not in ("", env.model_id):
            expected = PRECONDITION
        elif not vector_ok(case["vector"], env.dim):
            expected = INVALID
        else:
            expected = OK
        assert outcome.code == expected, (case["shard"], k, outcome.code, outcome.message)
        if outcome.code == OK:
            hits = outcome.response.hits
            assert len(hits) <= uint32_read(k)
            scores = [h.score for h in hits]
            assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True), scores
            if case["include_vectors"]:
                assert all(len(h.vector) == env.dim for h in hits)

    run_case(900, cases, body)


def test_snapshot_and_stats(env: Env) -> None:
    """CreateSnapshot on every shard number, GetShardStats; both always answer with a documented code."""

    def body(shard: int) -> None:
        value, overrides = _shard_fields(shard)
        outcome = _send(env, "CreateSnapshot", index_pb2.CreateSnapshotRequest(shard=value), overrides)
        catalog.check_call("index", "CreateSnapshot", "shard", outcome.code, outcome.message)
        assert outcome.code == (OK if _served(shard) else NOT_FOUND), outcome
        stats = _send(env, "GetShardStats", index_pb2.GetShardStatsRequest(), {})
        catalog.check_call("index", "GetShardStats", "raw", stats.code, stats.message)
        assert stats.code == OK and sorted(s.shard for s in stats.response.shards) == list(SHARDS)

    run_case(60, SHARD_NUMBERS, body)


def test_index_raw_bytes(env: Env) -> None:
    """Random bytes and ids or model ids of invalid UTF-8 to every index method."""
    payload = st.one_of(st.binary(max_size=64), invalid_utf8_item(2), invalid_utf8_item(7))
    cases = st.tuples(st.sampled_from(sorted(RESPONSES)), payload)

    def body(case: tuple[str, bytes]) -> None:
        method, data = case
        request_type, response_type = RESPONSES[method]
        parsed = _parse(request_type, data)
        if method == "CreateSnapshot" and parsed is not None and parsed.shard in SHARDS:
            return  # a snapshot writes the whole shard; test_snapshot_and_stats covers it
        if method == "DeleteVectors" and parsed is not None and any(i.startswith("known-") for i in parsed.ids):
            return
        outcome = call(f"index.{method}", raw_unary(env, "index", SERVICE + method, response_type), data)
        catalog.check_call("index", method, "raw", outcome.code, outcome.message)
        if parsed is None:
            assert outcome.code == INVALID, outcome
        elif method == "UpsertVectors" and outcome.code == OK:
            for status in outcome.response.statuses:
                catalog.check_item("index", "UpsertVectors", "raw", status.code, status.message)

    run_case(900, cases, body)


def _parse(request_type: Any, data: bytes) -> Any:
    message = request_type()
    try:
        message.ParseFromString(data)
    except Exception:
        return None
    return message
