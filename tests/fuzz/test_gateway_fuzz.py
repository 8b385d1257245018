"""Fuzz the public GatewayService: Search (every query kind), Ingest, Delete, Get and GetStats."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import grpc
from hypothesis import strategies as st

from crossmodal.v1 import gateway_pb2, types_pb2
from tests.fuzz import catalog
from tests.fuzz.catalog import INVALID, NOT_FOUND, OK, PRECONDITION
from tests.fuzz.harness import (
    Env,
    Outcome,
    call,
    call_stream,
    raw_stream,
    raw_unary,
    run_case,
    uint32_read,
    varint_field,
)
from tests.fuzz.strategies import (
    MAX_BATCH,
    MAX_K,
    MODALITIES,
    NEGATIVE,
    bomb_headers,
    filter_ok,
    filters,
    id_ok,
    ids,
    image_bytes,
    k_values,
    metadata,
    metadata_ok,
    modality_ok,
    tags,
    text_ok,
    texts,
    vector_ok,
    vectors,
)
from tests.fuzz.test_encoder_fuzz import invalid_utf8_item

SEARCH = "/crossmodal.v1.GatewayService/Search"


def _options() -> st.SearchStrategy[dict[str, Any]]:
    """The parts of a search other than the query."""
    return st.fixed_dictionaries(
        {
            # Weighted towards valid parts, so that the query itself decides the status often enough.
            "k": st.one_of(st.integers(0, 20), k_values(MAX_K)),
            "target": st.one_of(st.sampled_from([0, 1, 2]), MODALITIES),
            "filter": st.one_of(st.just(types_pb2.Filter()), filters()),
            "require_complete": st.booleans(),
            "exact": st.booleans(),
        }
    )


def _search(env: Env, label: str, query: dict[str, Any], options: dict[str, Any]) -> Outcome:
    k = options["k"]
    request = gateway_pb2.SearchRequest(
        **query,
        k=k if 0 <= k < 2**32 else 0,
        target=options["target"],
        filter=options["filter"],
        require_complete=options["require_complete"],
        exact=options["exact"],
    )
    data = request.SerializeToString()
    if not 0 <= k < 2**32:
        # A negative k cannot be set through the Python API: write it as protobuf does for an int.
        data += varint_field(5, -1 if k == NEGATIVE else k)
    return call(label, raw_unary(env, "gateway", SEARCH, gateway_pb2.SearchResponse), data)


def _k_ok(k: int) -> bool:
    effective = uint32_read(-1 if k == NEGATIVE else k)
    return effective <= MAX_K


def _options_ok(options: dict[str, Any]) -> bool:
    return modality_ok(options["target"], allow_unspecified=True) and filter_ok(options["filter"])


def _answer(options: dict[str, Any]) -> grpc.StatusCode:
    """The status of a valid query with these options: the fuzz cluster runs no audio encoder, so a search
    for sounds is FAILED_PRECONDITION."""
    if not _options_ok(options):
        return INVALID
    return PRECONDITION if options["target"] == types_pb2.MODALITY_AUDIO else OK


def _check_results(env: Env, response: gateway_pb2.SearchResponse, options: dict[str, Any], exclude: str = "") -> None:
    k = options["k"] or 10
    assert len(response.results) <= k
    assert not response.partial_shards, response.partial_shards
    assert response.model_id == env.model_id
    scores = [r.score for r in response.results]
    assert all(math.isfinite(s) and -1.0001 <= s <= 1.0001 for s in scores), scores
    assert scores == sorted(scores, reverse=True)
    if exclude:
        assert exclude not in {r.id for r in response.results}
    if options["target"] in (1, 2, 3, 4):
        assert all(r.modality == options["target"] for r in response.results)


def _expect(
    env: Env, cls: str, outcome: Outcome, expected: frozenset[grpc.StatusCode], options: dict[str, Any]
) -> None:
    catalog.check_call("gateway", "Search", cls, outcome.code, outcome.message)
    assert outcome.code in expected, (cls, outcome.code, outcome.message, expected)
    if outcome.code == OK:
        _check_results(env, outcome.response, options)


def test_search_vector(env: Env) -> None:
    """Raw vectors (NaN/Inf, wrong dimension, empty, zero, subnormal, huge) with every K, target and filter."""

    def body(case: tuple[list[float], dict[str, Any]]) -> None:
        values, options = case
        query = {"vector": gateway_pb2.QueryVector(values=values)}
        outcome = _search(env, "gateway.Search", query, options)
        valid = _k_ok(options["k"]) and vector_ok(values, env.dim)
        _expect(env, "vector", outcome, frozenset({_answer(options) if valid else INVALID}), options)

    run_case(1200, st.tuples(vectors(env.dim), _options()), body)


def test_search_text(env: Env) -> None:
    """Odd unicode, empty and over-long texts with every K, target and filter."""

    def body(case: tuple[str, dict[str, Any]]) -> None:
        text, options = case
        outcome = _search(env, "gateway.Search", {"text": text}, options)
        valid = _k_ok(options["k"]) and text_ok(text)
        _expect(env, "text", outcome, frozenset({_answer(options) if valid else INVALID}), options)

    run_case(600, st.tuples(texts(), _options()), body)


def test_search_image(env: Env) -> None:
    """Real, truncated, corrupted, random, junk-header and bomb images as queries."""
    images = st.one_of(image_bytes(env.images), bomb_headers().map(lambda b: ("bomb", b[3])))

    def body(case: tuple[tuple[str, bytes], dict[str, Any]]) -> None:
        (cls, data), options = case
        outcome = _search(env, "gateway.Search", {"image": data}, options)
        if not _k_ok(options["k"]) or not data:
            expected = frozenset({INVALID})
        elif _answer(options) != OK:
            expected = frozenset({_answer(options)})  # refused for its options before the image is decoded
        elif cls in ("random", "bomb"):
            expected = frozenset({INVALID})
        elif cls == "real":
            expected = frozenset({OK})
        else:
            expected = frozenset({INVALID, OK})
        _expect(env, "image", outcome, expected, options)

    run_case(500, st.tuples(images, _options()), body)


def test_search_like_id(env: Env) -> None:
    """Stored, absent, empty, over-long and odd-character ids as "more like this" queries."""
    like = st.one_of(ids(), st.sampled_from(env.known_ids))

    def body(case: tuple[str, dict[str, Any]]) -> None:
        like_id, options = case
        outcome = _search(env, "gateway.Search", {"like_id": like_id}, options)
        usable = _answer(options)
        if not _k_ok(options["k"]) or not id_ok(like_id):
            expected = frozenset({INVALID})
        elif like_id in env.known_ids:
            expected = frozenset({usable})
        else:
            expected = frozenset({NOT_FOUND, usable})  # an earlier fuzz input may have stored it
        catalog.check_call("gateway", "Search", "like_id", outcome.code, outcome.message)
        assert outcome.code in expected, (like_id, outcome.code, outcome.message)
        if outcome.code == OK:
            _check_results(env, outcome.response, options, exclude=like_id)

    run_case(700, st.tuples(like, _options()), body)


def test_search_raw_bytes(env: Env) -> None:
    """Random bytes, and texts or like_ids of invalid UTF-8, as Search requests."""
    payload = st.one_of(st.binary(max_size=64), invalid_utf8_item(1), invalid_utf8_item(4))

    def body(data: bytes) -> None:
        outcome = call("gateway.Search", raw_unary(env, "gateway", SEARCH, gateway_pb2.SearchResponse), data)
        catalog.check_call("gateway", "Search", "raw", outcome.code, outcome.message)
        if not _parses(gateway_pb2.SearchRequest(), data):
            assert outcome.code == INVALID, outcome

    run_case(600, payload, body)


def _parses(message: Any, data: bytes) -> bool:
    try:
        message.ParseFromString(data)
    except Exception:
        return False
    return True


# --- Ingest --------------------------------------------------------------------------------------


def _ingest_items(env: Env) -> st.SearchStrategy[list[tuple[gateway_pb2.IngestRequest, str]]]:
    content: st.SearchStrategy[tuple[dict[str, Any], str]] = st.one_of(
        texts().map(lambda t: ({"text": t}, "text")),
        image_bytes(env.images).map(lambda ci: ({"image": ci[1]}, ci[0])),
        bomb_headers().map(lambda b: ({"image": b[3]}, "bomb")),
        st.just(({}, "none")),
    )
    item = st.builds(
        lambda item_id, c, meta, tag_list: (
            gateway_pb2.IngestRequest(id=item_id, metadata=meta, tags=tag_list, **c[0]),
            c[1],
        ),
        ids(),
        content,
        metadata(),
        tags(),
    )
    # Duplicate ids in one stream: every copy is acknowledged, the last write wins.
    return st.one_of(
        st.lists(item, min_size=1, max_size=6),
        st.lists(item, min_size=1, max_size=3).map(lambda xs: xs + [xs[0]]),
    )


def _ingest_expected(item: gateway_pb2.IngestRequest, cls: str) -> frozenset[grpc.StatusCode]:
    which = item.WhichOneof("content")
    if not id_ok(item.id) or which is None or not metadata_ok(dict(item.metadata), list(item.tags)):
        return frozenset({INVALID})
    if which == "text":
        return frozenset({OK if text_ok(item.text) else INVALID})
    if cls == "real":
        return frozenset({OK})
    if cls in ("random", "bomb") or not item.image:
        return frozenset({INVALID})
    return frozenset({OK, INVALID})


def test_ingest(env: Env) -> None:
    """Streams of items with odd ids, bad content, metadata and tags of every size, duplicates."""

    def body(items: list[tuple[gateway_pb2.IngestRequest, str]]) -> None:
        outcome = call_stream("gateway.Ingest", env.gateway.Ingest, [item for item, _ in items])
        catalog.check_call("gateway", "Ingest", "items", outcome.code, outcome.message)
        assert outcome.code == OK, outcome.message
        acks = outcome.response
        assert Counter(a.id for a in acks) == Counter(item.id for item, _ in items)
        expected: dict[str, set[grpc.StatusCode]] = {}
        for item, cls in items:
            expected.setdefault(item.id, set()).update(_ingest_expected(item, cls))
        for ack in acks:
            code = catalog.check_item("gateway", "Ingest", "items", ack.status.code, ack.status.message)
            assert code in expected[ack.id], (ack.id, code, ack.status.message, expected[ack.id])

    run_case(250, _ingest_items(env), body)


def test_ingest_raw_bytes(env: Env) -> None:
    """Ingest streams of random bytes and of items whose id or text is invalid UTF-8."""
    bad = st.one_of(st.binary(max_size=48), invalid_utf8_item(1), invalid_utf8_item(3))
    good = st.just(gateway_pb2.IngestRequest(id="fuzz-raw", text="a blue square").SerializeToString())
    stream = st.lists(st.one_of(bad, good), min_size=1, max_size=3)

    def body(messages: list[bytes]) -> None:
        method = raw_stream(env, "gateway", "/crossmodal.v1.GatewayService/Ingest", gateway_pb2.IngestResponse)
        outcome = call_stream("gateway.Ingest", method, messages)
        catalog.check_call("gateway", "Ingest", "raw", outcome.code, outcome.message)
        if not all(_parses(gateway_pb2.IngestRequest(), m) for m in messages):
            assert outcome.code == INVALID, outcome
        elif outcome.code == OK:
            for ack in outcome.response:
                catalog.check_item("gateway", "Ingest", "raw", ack.status.code, ack.status.message)

    run_case(250, stream, body)


# --- Delete, Get, GetStats -----------------------------------------------------------------------


def _id_lists() -> st.SearchStrategy[list[str]]:
    return st.one_of(
        st.lists(ids(), min_size=1, max_size=5),
        st.lists(ids(), min_size=1, max_size=5).map(lambda xs: xs + xs),
        st.just([]),
        st.builds(lambda n: [f"fuzz-{i}" for i in range(n)], st.sampled_from([MAX_BATCH, MAX_BATCH + 1])),
    )


def _ids_ok(values: list[str]) -> bool:
    return 1 <= len(values) <= MAX_BATCH and all(id_ok(i) for i in values)


def test_get(env: Env) -> None:
    """Get with no ids, too many, empty, over-long, duplicate and odd-character ids."""

    def body(values: list[str]) -> None:
        outcome = call("gateway.Get", env.gateway.Get, gateway_pb2.GetRequest(ids=values))
        catalog.check_call("gateway", "Get", "ids", outcome.code, outcome.message)
        assert outcome.code == (OK if _ids_ok(values) else INVALID), (values[:3], outcome.message)
        if outcome.code == OK:
            found = {item.id for item in outcome.response.items} | set(outcome.response.missing)
            assert found == set(values)

    run_case(600, _id_lists(), body)


def test_delete(env: Env) -> None:
    """Delete with no ids, too many, empty, over-long, duplicate and odd-character ids."""

    def body(values: list[str]) -> None:
        outcome = call("gateway.Delete", env.gateway.Delete, gateway_pb2.DeleteRequest(ids=values))
        catalog.check_call("gateway", "Delete", "ids", outcome.code, outcome.message)
        assert outcome.code == (OK if _ids_ok(values) else INVALID), (values[:3], outcome.message)
        if outcome.code == OK:
            assert outcome.response.deleted <= len(set(values))

    run_case(500, _id_lists(), body)


def test_gateway_raw_bytes(env: Env) -> None:
    """Random bytes and ids of invalid UTF-8 to Delete, Get and GetStats."""
    responses = {
        "Delete": (gateway_pb2.DeleteRequest, gateway_pb2.DeleteResponse),
        "Get": (gateway_pb2.GetRequest, gateway_pb2.GetResponse),
        "GetStats": (gateway_pb2.GetStatsRequest, gateway_pb2.GetStatsResponse),
    }
    payload = st.one_of(st.binary(max_size=64), invalid_utf8_item(1))
    cases = st.tuples(st.sampled_from(sorted(responses)), payload)

    def body(case: tuple[str, bytes]) -> None:
        method, data = case
        request_type, response_type = responses[method]
        if method == "Delete" and _parses(request_type(), data):
            parsed = request_type.FromString(data)  # type: ignore[attr-defined]
            if any(i.startswith("known-") for i in parsed.ids):
                return
        rpc = raw_unary(env, "gateway", f"/crossmodal.v1.GatewayService/{method}", response_type)
        outcome = call(f"gateway.{method}", rpc, data)
        catalog.check_call("gateway", method, "raw", outcome.code, outcome.message)
        if not _parses(request_type(), data):
            assert outcome.code == INVALID, outcome
        if method == "GetStats" and outcome.code == OK:
            assert outcome.response.model_id == env.model_id and outcome.response.total_count >= len(env.known_ids)

    run_case(700, cases, body)


def test_oversized_message(env: Env) -> None:
    """A request over CROSSMODAL_MAX_MESSAGE_BYTES (64 MiB) is refused with RESOURCE_EXHAUSTED."""
    request = gateway_pb2.SearchRequest(image=b"\x00" * (64 * 1024 * 1024 + 16))
    outcome = call("gateway.Search", env.gateway.Search, request)
    catalog.check_call("gateway", "Search", "raw", outcome.code, outcome.message)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
