"""Regression tests of the bugs the fuzz found, each with the input that triggered it."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message

from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from services.common.limits import LimitError, check_vector
from tests.fuzz.harness import Env, raw_stream, raw_unary, varint

# A string field (number 1) holding bytes that are not UTF-8.
BAD_UTF8_FIELD_1 = varint((1 << 3) | 2) + varint(2) + b"\xc3\x28"


def _bad_utf8(field: int) -> bytes:
    return varint((field << 3) | 2) + varint(2) + b"\xc3\x28"


def _assert_refused(exc: grpc.RpcError) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert "cannot be parsed" in (exc.details() or "")


@pytest.mark.parametrize(
    ("service", "method", "payload", "response"),
    [
        ("gateway", "/crossmodal.v1.GatewayService/Search", BAD_UTF8_FIELD_1, gateway_pb2.SearchResponse),
        ("gateway", "/crossmodal.v1.GatewayService/Get", BAD_UTF8_FIELD_1, gateway_pb2.GetResponse),
        ("gateway", "/crossmodal.v1.GatewayService/GetStats", b"\xff\xff\xff", gateway_pb2.GetStatsResponse),
        (
            "text",
            "/crossmodal.v1.EncoderService/Encode",
            varint((1 << 3) | 2) + varint(4) + _bad_utf8(2),
            encoder_pb2.EncodeResponse,
        ),
        ("image", "/crossmodal.v1.EncoderService/GetModelInfo", b"\x0a\x05ab", encoder_pb2.GetModelInfoResponse),
        ("index", "/crossmodal.v1.IndexService/GetVectors", _bad_utf8(2), index_pb2.GetVectorsResponse),
        ("index", "/crossmodal.v1.IndexService/UpsertVectors", _bad_utf8(2), index_pb2.UpsertVectorsResponse),
    ],
)
def test_undecodable_unary_request_is_invalid_argument(
    env: Env, service: str, method: str, payload: bytes, response: type
) -> None:
    """Bug: a request that does not parse (invalid UTF-8, bad wire format) got UNKNOWN from every service."""
    with pytest.raises(grpc.RpcError) as caught:
        raw_unary(env, service, method, response)(payload, timeout=30)
    _assert_refused(caught.value)


@pytest.mark.parametrize(
    ("service", "method", "good", "response"),
    [
        (
            "gateway",
            "/crossmodal.v1.GatewayService/Ingest",
            gateway_pb2.IngestRequest(id="regression-ok", text="a blue square"),
            gateway_pb2.IngestResponse,
        ),
    ],
)
def test_undecodable_stream_message_is_invalid_argument(
    env: Env, service: str, method: str, good: Message, response: type
) -> None:
    """Bug: a stream message with invalid UTF-8 (after a good one) ended the stream with UNKNOWN."""
    messages = [good.SerializeToString(), _bad_utf8(1)]
    with pytest.raises(grpc.RpcError) as caught:
        list(raw_stream(env, service, method, response)(iter(messages), timeout=30))
    _assert_refused(caught.value)


def test_search_vector_not_normalisable_in_float32_is_invalid(env: Env) -> None:
    """Bug: a query whose float32 length overflows was normalised to zeros and answered OK with junk hits."""
    values = [1.8446744073709552e19] + [0.0] * (env.dim - 1)
    with pytest.raises(grpc.RpcError) as caught:
        env.gateway.Search(gateway_pb2.SearchRequest(vector=gateway_pb2.QueryVector(values=values)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unit length" in (caught.value.details() or "")


def test_upsert_vector_not_normalisable_in_float32_is_refused(env: Env) -> None:
    """Bug: an item of tiny values was stored, and its float32 normalisation put inf/NaN in the graph."""
    items = [
        index_pb2.IndexItem(id="regression-tiny", modality=types_pb2.MODALITY_IMAGE, vector=[1e-30] * env.dim),
        index_pb2.IndexItem(id="regression-huge", modality=types_pb2.MODALITY_TEXT, vector=[3e38] * env.dim),
        index_pb2.IndexItem(id="regression-fine", modality=types_pb2.MODALITY_TEXT, vector=[0.5] * env.dim),
    ]
    reply = env.index.UpsertVectors(
        index_pb2.UpsertVectorsRequest(shard=0, model_id=env.model_id, items=items), timeout=30
    )
    codes = [s.code for s in reply.statuses]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2 + [0], reply
    got = env.index.GetVectors(
        index_pb2.GetVectorsRequest(shard=0, ids=["regression-tiny", "regression-huge"]), timeout=30
    )
    assert sorted(got.missing) == ["regression-huge", "regression-tiny"]


@pytest.mark.parametrize(
    "values",
    [[1.8446744e19, 0.0, 0.0], [3e38, 3e38, 3e38], [1e-30, 1e-30, 0.0], [1e-45, 0.0, 0.0]],
)
def test_check_vector_refuses_what_float32_cannot_normalise(values: list[float]) -> None:
    """The index's vector check refuses values whose float32 length is zero or infinite."""
    with pytest.raises(LimitError, match="unit length"):
        check_vector(np.asarray(values, dtype=np.float32), 3)


@pytest.mark.parametrize("values", [[1.0, 0.0, 0.0], [1e19, 1e19, 0.0], [1e-18, 0.0, 0.0], [-0.2, 0.3, 1e-30]])
def test_check_vector_accepts_normalisable_vectors(values: list[float]) -> None:
    """Large, small and mixed but normalisable vectors stay accepted."""
    check_vector(np.asarray(values, dtype=np.float32), 3)


def test_like_id_search_at_max_k_is_answered(env: Env) -> None:
    """Bug: a "more like this" search with K = MAX_K asked the shards for MAX_K + 1 and failed INVALID_ARGUMENT."""
    reply = env.gateway.Search(gateway_pb2.SearchRequest(like_id="known-1", k=1000), timeout=30)
    ids = [r.id for r in reply.results]
    assert ids and "known-1" not in ids and len(ids) <= 1000
