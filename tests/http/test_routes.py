"""Unit tests of the HTTP mapping: routes read from the annotations, the error table, strict canonical JSON."""

from __future__ import annotations

import grpc
import pytest

from crossmodal.v1 import gateway_pb2
from services.http.codec import bind_fields, parse_json
from services.http.errors import HTTP_STATUS, HttpError, error_of
from services.http.openapi import openapi_document
from services.http.routes import RouteError, http_routes, parse_template


def test_routes_come_from_the_annotations() -> None:
    """Each binding in gateway.proto is one route, with its method, path, variables and streaming kind."""
    table = {
        (r.method, r.path): (r.rpc, r.variables, r.body, r.client_streaming, r.server_streaming) for r in http_routes()
    }
    assert table[("POST", "/v1/search")] == ("Search", (), "*", False, False)
    assert table[("POST", "/v1/items:ingest")] == ("Ingest", (), "*", True, True)
    assert table[("GET", "/v1/items/{ids}")] == ("Get", ("ids",), "", False, False)
    assert table[("GET", "/v1/items")] == ("Get", (), "", False, False)
    assert table[("DELETE", "/v1/items/{ids}")] == ("Delete", ("ids",), "", False, False)
    assert table[("POST", "/v1/items:delete")] == ("Delete", (), "*", False, False)
    assert table[("GET", "/v1/stats")] == ("GetStats", (), "", False, False)


def test_path_templates() -> None:
    """The template subset: literals, {field} and a :verb; anything else is refused at start-up."""
    assert parse_template("/v1/items/{ids}") == ("/v1/items/{ids}", ("ids",))
    assert parse_template("/v1/items:ingest") == ("/v1/items:ingest", ())
    assert parse_template("/v1/{name=*}/x") == ("/v1/{name}/x", ("name",))
    for bad in ("v1/search", "/v1/{name=shelves/*}", "/v1/**", "/v1/a b"):
        with pytest.raises(RouteError):
            parse_template(bad)


def test_the_status_table_is_the_standard_mapping() -> None:
    """Every gRPC code has its google.rpc.Code HTTP status; the gateway's status passes through unchanged."""
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    expected = {
        "INVALID_ARGUMENT": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "RESOURCE_EXHAUSTED": 429,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
        "UNIMPLEMENTED": 501,
    }
    assert {code.name: HTTP_STATUS[code] for code in grpc.StatusCode if code.name in expected} == expected
    error = error_of(RuntimeError("boom"))
    assert error.http_status == 500 and "boom" not in error.message


def test_canonical_json_is_strict() -> None:
    """Unknown fields, bad base64 and wrong types are refused; good input parses in lowerCamel or proto names."""
    request = parse_json(b'{"likeId": "a", "k": "7", "target": "MODALITY_TEXT"}', gateway_pb2.SearchRequest())
    assert request.like_id == "a" and request.k == 7 and request.target == 2
    assert parse_json(b'{"image": "iVBORw0K"}', gateway_pb2.SearchRequest()).image.startswith(b"\x89PNG")
    assert parse_json(b'{"image": "_-8"}', gateway_pb2.SearchRequest()).image == b"\xff\xef"  # URL-safe, unpadded
    for body in (b'{"image": "a b"}', b'{"image": "abcde"}', b'{"nope": 1}', b'{"k": -1}', b"[]", b"{"):
        with pytest.raises(HttpError) as caught:
            parse_json(body, gateway_pb2.SearchRequest())
        assert caught.value.http_status == 400
    with pytest.raises(HttpError, match=r"frames\[0\]|image"):
        parse_json(b'{"id": "x", "image": "@@"}', gateway_pb2.IngestRequest())


def test_query_and_path_binding() -> None:
    """Repeated fields take every value; unknown or nested names and repeated scalars are refused."""
    message = gateway_pb2.GetRequest()
    bind_fields(message, {"ids": ["a", "b"]}, "query")
    bind_fields(message, {"ids": ["c"]}, "path")
    assert list(message.ids) == ["a", "b", "c"]
    for values in ({"after": ["1"]}, {"colour": ["red"]}):
        with pytest.raises(HttpError):
            bind_fields(gateway_pb2.GetRequest(), values, "query")
    with pytest.raises(HttpError, match="takes one value"):
        bind_fields(gateway_pb2.SearchRequest(), {"k": ["1", "2"]}, "query")


def test_openapi_schemas_follow_the_json_mapping() -> None:
    """64-bit integers are strings, bytes are base64, enums by name, maps are objects; every message is defined."""
    document = openapi_document(http_routes())
    schemas = document["components"]["schemas"]
    stats = schemas["crossmodal.v1.GetStatsResponse"]["properties"]
    assert stats["totalCount"]["type"] == "string" and stats["dim"]["type"] == "integer"
    search = schemas["crossmodal.v1.SearchRequest"]["properties"]
    assert search["image"]["format"] == "byte" and "MODALITY_IMAGE" in search["target"]["enum"]
    assert schemas["crossmodal.v1.SearchResult"]["properties"]["metadata"]["additionalProperties"] == {"type": "string"}
    refs = {v.split("/")[-1] for v in _refs(document)}
    assert refs <= set(schemas)


def _refs(value: object) -> list[str]:
    if isinstance(value, dict):
        return [v for k, item in value.items() for v in ([item] if k == "$ref" else _refs(item))]
    if isinstance(value, list):
        return [v for item in value for v in _refs(item)]
    return []
