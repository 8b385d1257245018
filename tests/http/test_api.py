"""Every route of the HTTP/JSON API against a real cluster, with a plain HTTP client: answers and errors."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api import annotations_pb2
from PIL import Image

from crossmodal.client import Client
from crossmodal.cluster import LocalCluster
from crossmodal.v1 import gateway_pb2
from tests.http.conftest import shard_map
from tests.http.helpers import HttpClient, multipart
from tests.support import ROOT, ServiceProcess, metric_value, metrics_text, wait_for

Gallery = tuple[Path, list[dict[str, str]]]


def test_search_answers_what_the_gateway_answers(http: HttpClient, http_cluster: LocalCluster) -> None:
    """POST /v1/search returns the gateway's own results, in canonical JSON (no second search implementation)."""
    status, reply = http.json("POST", "/v1/search", {"text": "a red circle", "k": 5, "target": "MODALITY_IMAGE"})
    assert status == 200
    with Client(http_cluster.address) as client:
        direct = client.search("a red circle", k=5, target="image").hits
    assert [r["id"] for r in reply["results"]] == [h.id for h in direct]
    assert [r["score"] for r in reply["results"]] == pytest.approx([h.score for h in direct], abs=1e-6)
    first = reply["results"][0]
    assert first["modality"] == "MODALITY_IMAGE" and first["metadata"]["kind"] == "image"
    assert reply["partialShards"] == [] and reply["modelId"]


def test_search_with_an_image_as_base64_and_as_a_file(http: HttpClient, http_gallery: Gallery) -> None:
    """An image query works as base64 in JSON and as a multipart file; both find that image first."""
    record = http_gallery[1][3]
    data = Path(record["path"]).read_bytes()
    status, reply = http.json(
        "POST", "/v1/search", {"image": base64.b64encode(data).decode(), "k": 3, "target": "MODALITY_IMAGE"}
    )
    assert status == 200 and reply["results"][0]["id"] == record["id"]
    body, content_type = multipart(
        [
            ("request", None, json.dumps({"k": 3, "target": "MODALITY_IMAGE"}).encode(), "application/json"),
            ("image", "query.png", data, "image/png"),
        ]
    )
    status, _headers, raw = http.request("POST", "/v1/search", body, content_type)
    assert status == 200, raw
    assert json.loads(raw)["results"][0]["id"] == record["id"]


def test_more_like_this_and_filters(http: HttpClient, http_gallery: Gallery) -> None:
    """likeId leaves the item out; a metadata filter restricts the results."""
    record = http_gallery[1][0]
    status, reply = http.json("POST", "/v1/search", {"likeId": record["id"], "k": 4})
    assert status == 200 and record["id"] not in [r["id"] for r in reply["results"]]
    status, reply = http.json(
        "POST",
        "/v1/search",
        {"text": "a shape", "k": 10, "filter": {"clauses": [{"key": "kind", "anyOf": ["caption"]}]}},
    )
    assert status == 200 and {r["metadata"]["kind"] for r in reply["results"]} == {"caption"}


def test_get_one_and_several(http: HttpClient, http_gallery: Gallery) -> None:
    """GET /v1/items/{id} answers one item (404 when missing); GET /v1/items?ids= answers several and the missing."""
    record = http_gallery[1][1]
    status, reply = http.json("GET", f"/v1/items/{record['id']}")
    assert status == 200
    assert reply["items"][0]["id"] == record["id"] and reply["items"][0]["metadata"]["path"] == record["path"]
    status, reply = http.json("GET", "/v1/items/no-such-item")
    assert status == 404 and reply["code"] == 5 and "no-such-item" in reply["message"]
    status, reply = http.json("GET", f"/v1/items?ids={record['id']}&ids=no-such-item")
    assert (
        status == 200 and [i["id"] for i in reply["items"]] == [record["id"]] and reply["missing"] == ["no-such-item"]
    )


def test_stats(http: HttpClient) -> None:
    """GET /v1/stats: counts as canonical JSON (64-bit integers as strings)."""
    status, reply = http.json("GET", "/v1/stats")
    assert status == 200 and int(reply["totalCount"]) >= 32 and len(reply["shards"]) == 2 and reply["dim"] > 0


def test_ingest_ndjson_get_and_delete(http: HttpClient, http_gallery: Gallery) -> None:
    """NDJSON in and out; DELETE /v1/items/{id} and POST /v1/items:delete remove what it stored."""
    lines = b"".join(
        json.dumps({"id": f"api-text-{n}", "text": f"a note number {n}", "tags": ["api"]}).encode() + b"\n"
        for n in range(3)
    )
    status, headers, body = http.request("POST", "/v1/items:ingest", lines, "application/x-ndjson")
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    acks = [json.loads(line) for line in body.splitlines()]
    assert sorted(a["id"] for a in acks) == ["api-text-0", "api-text-1", "api-text-2"]
    assert all(a.get("status", {}).get("code", 0) == 0 for a in acks)
    assert http.json("GET", "/v1/items/api-text-0")[1]["items"][0]["tags"] == ["api"]
    status, reply = http.json("DELETE", "/v1/items/api-text-0")
    assert status == 200 and reply["deleted"] == 1
    status, reply = http.json("POST", "/v1/items:delete", {"ids": ["api-text-1", "api-text-2"]})
    assert status == 200 and reply["deleted"] == 2
    status, reply = http.json("GET", "/v1/items?ids=api-text-0&ids=api-text-1&ids=api-text-2")
    assert reply["items"] == [] and len(reply["missing"]) == 3


def test_ingest_multipart_upload(http: HttpClient, http_gallery: Gallery) -> None:
    """Image files uploaded as multipart become items named by their file names, with the given metadata and tags."""
    paths = [Path(r["path"]) for r in http_gallery[1][:2]]
    body, content_type = multipart(
        [
            ("id_prefix", None, b"upload/", "text/plain"),
            ("metadata", None, json.dumps({"metadata": {"album": "test"}}).encode(), "application/json"),
            ("tags", None, b"uploaded", "text/plain"),
            *[("image", p.name, p.read_bytes(), "image/png") for p in paths],
        ]
    )
    status, _headers, raw = http.request("POST", "/v1/items:ingest", body, content_type)
    assert status == 200, raw
    assert sorted(json.loads(line)["id"] for line in raw.splitlines()) == sorted(f"upload/{p.name}" for p in paths)
    status, reply = http.json("GET", f"/v1/items?ids=upload/{paths[0].name}")
    item = reply["items"][0]
    assert item["metadata"] == {"album": "test", "filename": paths[0].name} and item["tags"] == ["uploaded"]
    assert http.json("POST", "/v1/items:delete", {"ids": [f"upload/{p.name}" for p in paths]})[1]["deleted"] == 2


def test_thumbnail_and_media(http: HttpClient, http_gallery: Gallery) -> None:
    """A thumbnail is a JPEG no larger than asked; media is the file itself, with Range requests."""
    record = http_gallery[1][2]
    status, headers, data = http.request("GET", f"/v1/items/{record['id']}/thumbnail?size=48")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and max(image.size) <= 48
    original = Path(record["path"]).read_bytes()
    status, headers, data = http.request("GET", f"/v1/items/{record['id']}/media")
    assert status == 200 and headers["content-type"] == "image/png" and data == original
    status, headers, data = http.request("GET", f"/v1/items/{record['id']}/media", headers={"Range": "bytes=0-9"})
    assert status == 206 and data == original[:10]
    status, reply = http.json("GET", f"/v1/items/{record['id']}#caption/thumbnail".replace("#", "%23"))
    assert status == 404 and "no stored file" in reply["message"]
    status, reply = http.json("GET", f"/v1/items/{record['id']}/thumbnail?size=5")
    assert status == 400 and reply["code"] == 3


def test_openapi_describes_every_annotated_rpc(http: HttpClient) -> None:
    """The served OpenAPI document has an operation for every google.api.http binding in gateway.proto."""
    status, document = http.json("GET", "/v1/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    service = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
    expected = set()
    for method in service.methods:
        if method.GetOptions().HasExtension(annotations_pb2.http):
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for binding in [rule, *rule.additional_bindings]:
                kind = binding.WhichOneof("pattern")
                expected.add((getattr(binding, kind), kind, f"/crossmodal.v1.GatewayService/{method.name}"))
    described = {
        (path, verb, op["x-grpc-method"])
        for path, item in document["paths"].items()
        for verb, op in item.items()
        if "x-grpc-method" in op
    }
    assert expected and expected == described
    assert {"Search", "Ingest", "Get", "Delete", "GetStats"} <= {e[2].rsplit("/", 1)[1] for e in expected}
    assert "/v1/items/{id}/thumbnail" in document["paths"]
    assert document["components"]["schemas"]["crossmodal.v1.SearchRequest"]["properties"]["likeId"] == {
        "type": "string"
    }


def test_page_and_assets_are_served_locally(http: HttpClient) -> None:
    """The page and its assets come from the service, with no external origin; unknown assets are 404 JSON."""
    status, headers, page = http.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/static/app.js" in page and b"http://" not in page and b"https://" not in page
    assert "default-src 'self'" in headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        status, _h, body = http.request("GET", f"/static/{asset}")
        assert status == 200 and b"https://" not in body
    status, reply = http.json("GET", "/static/..%2Fconfig.py")
    assert status == 404 and reply["code"] == 5


def test_routing_and_body_errors(http: HttpClient) -> None:
    """Unknown routes, wrong methods, wrong content types, stray bodies and parameters: each a JSON 4xx."""
    cases = [
        ("GET", "/v1/nothing-here", None, None, 404),
        ("PUT", "/v1/search", b"{}", "application/json", 405),
        ("POST", "/v1/search", b"text=a", "application/x-www-form-urlencoded", 415),
        ("POST", "/v1/search?k=3", b'{"text": "a"}', "application/json", 400),
        ("GET", "/v1/stats", b'{"x": 1}', "application/json", 400),
        ("GET", "/v1/items?colour=red", None, None, 400),
        ("GET", "/v1/items", None, None, 400),  # no ids: the gateway's INVALID_ARGUMENT
        ("POST", "/v1/search", b'{"text": "a", "k": 100000000}', "application/json", 400),
        ("POST", "/v1/items:ingest", b"", "application/x-ndjson", 400),
    ]
    for method, path, body, content_type, expected in cases:
        status, headers, raw = http.request(method, path, body, content_type)
        assert status == expected, (method, path, status, raw)
        reply = json.loads(raw)
        assert set(reply) == {"code", "message", "details"} and reply["message"], reply
        assert "Traceback" not in reply["message"]


def test_request_id_is_returned_and_forwarded(http: HttpClient, http_cluster: LocalCluster) -> None:
    """X-Request-Id comes back on the response and reaches the gateway (its log line of the failed call)."""
    status, headers, _raw = http.request(
        "POST",
        "/v1/search",
        b'{"text": "a", "k": 99999999}',
        "application/json",
        headers={"X-Request-Id": "http-test-42"},
    )
    assert status == 400 and headers["x-request-id"] == "http-test-42"
    assert http.request("GET", "/v1/stats")[1]["x-request-id"]  # one is made when none is sent
    gateway = http_cluster.by_name("gateway")
    wait_for(lambda: "http-test-42" in gateway.log_path.read_text(), 10, "the request id in the gateway's log")


def test_metrics_by_route_and_status(http: HttpClient, http_cluster: LocalCluster) -> None:
    """/metrics counts requests by route template, method and HTTP status."""
    assert http.request("GET", "/v1/items/metric-missing")[0] == 404
    assert http.request("GET", "/v1/stats")[0] == 200
    text = metrics_text(http_cluster.by_name("http").metrics_port)
    assert (
        metric_value(text, "crossmodal_http_requests_total", route="/v1/items/{ids}", method="GET", status="404") >= 1
    )
    assert metric_value(text, "crossmodal_http_requests_total", route="/v1/stats", method="GET", status="200") >= 1
    assert 'crossmodal_http_request_duration_seconds_count{method="GET",route="/v1/stats"}' in text
    # A made-up method is refused, and counted as OTHER: clients cannot mint new time series.
    assert http.request("PROPFIND", "/v1/stats")[0] == 405
    text = metrics_text(http_cluster.by_name("http").metrics_port)
    assert metric_value(text, "crossmodal_http_requests_total", route="unmatched", method="OTHER", status="405") >= 1
    assert "PROPFIND" not in text


@pytest.fixture(scope="module")
def keyed(http_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpClient]:
    """A gateway with an API key and a tight rate limit over the same encoders and shards, and an HTTP service."""
    work = tmp_path_factory.mktemp("keyed")
    keys = work / "keys.txt"
    keys.write_text("secret-key-1\n")
    gateway = ServiceProcess(
        "services.gateway",
        work / "gateway",
        {
            "CROSSMODAL_GATEWAY_TEXT_ENCODERS": http_cluster.by_name("encoder_text").address,
            "CROSSMODAL_GATEWAY_IMAGE_ENCODERS": http_cluster.by_name("encoder_image").address,
            "CROSSMODAL_GATEWAY_SHARDS": shard_map(http_cluster),
            "CROSSMODAL_GATEWAY_API_KEYS_FILE": str(keys),
            "CROSSMODAL_GATEWAY_RATE_LIMIT_RPS": "0.01",
            "CROSSMODAL_GATEWAY_RATE_LIMIT_BURST": "4",
        },
    )
    front = None
    try:
        gateway.wait_ready()
        front = ServiceProcess("services.http", work / "http", {"CROSSMODAL_HTTP_GATEWAY": gateway.address})
        front.wait_ready()
        yield HttpClient(f"http://{front.address}")
    finally:
        for process in (front, gateway):
            if process is not None:
                process.terminate()


def test_api_keys_and_rate_limits_are_the_gateways(keyed: HttpClient) -> None:
    """No key: 401; a wrong key: 401; the key: 200; past the key's burst: 429 with Retry-After."""
    status, reply = keyed.json("GET", "/v1/stats")
    assert status == 401 and reply["code"] == 16 and "Bearer" in reply["message"]
    assert keyed.json("GET", "/v1/stats", headers={"Authorization": "Bearer wrong"})[0] == 401
    good = {"Authorization": "Bearer secret-key-1"}
    statuses = [keyed.request("GET", "/v1/stats", headers=good) for _ in range(6)]
    assert statuses[0][0] == 200
    limited = [s for s in statuses if s[0] == 429]
    assert limited and limited[0][1]["retry-after"] == "1"
    assert json.loads(limited[0][2])["code"] == 8 and "rate limit" in json.loads(limited[0][2])["message"]
    # The streamed route reports a refused stream with its own status too.
    status, _h, raw = keyed.request("POST", "/v1/items:ingest", b'{"id": "k", "text": "t"}\n', "application/x-ndjson")
    assert status in (401, 429) and json.loads(raw)["code"] in (16, 8), raw


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_gateway_is_503_and_sigterm_drains(tmp_path: Path) -> None:
    """Without a gateway: alive, not ready, every API call 503 JSON; SIGTERM stops it cleanly."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CROSSMODAL_HOST": "127.0.0.1",
        "CROSSMODAL_PORT": str(port),
        "CROSSMODAL_METRICS_PORT": "-1",
        "CROSSMODAL_HTTP_GATEWAY": f"127.0.0.1:{_free_port()}",
        "CROSSMODAL_HTTP_GATEWAY_TIMEOUT_SECONDS": "2",
        "CROSSMODAL_LOG_FORMAT": "json",
    }
    with open(tmp_path / "http.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.http"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        client = HttpClient(f"http://127.0.0.1:{port}", timeout=10)

        def alive() -> bool:
            try:
                return client.request("GET", "/healthz")[0] == 200
            except OSError:
                return False

        wait_for(alive, 30, "the HTTP service to listen")
        status, reply = client.json("GET", "/readyz")
        assert status == 503 and reply["code"] == 14 and "not SERVING" in reply["message"]
        status, reply = client.json("GET", "/v1/stats")
        assert status == 503 and reply["code"] == 14 and "gateway" in reply["message"]
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert proc.wait(30) == 0 and time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
