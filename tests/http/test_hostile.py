"""Hostile input over HTTP: each a clear 4xx with a JSON error, nothing stored, nothing read outside the media roots."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.conftest import STRICT_MAX_BODY
from tests.http.helpers import HttpClient
from tests.support import ServiceProcess

Gallery = tuple[Path, list[dict[str, str]]]


@pytest.fixture(scope="module")
def strict(strict_http: ServiceProcess) -> HttpClient:
    """A client of the HTTP service with small limits (64 KiB bodies, 20 headers, 1 s timeouts)."""
    return HttpClient(f"http://{strict_http.address}", timeout=30)


@pytest.fixture(scope="module")
def unchanged(http: HttpClient) -> Iterator[None]:
    """Fails the module if the collection's item count changed: no hostile request may store anything."""
    before = http.json("GET", "/v1/stats")[1]["totalCount"]
    yield
    assert http.json("GET", "/v1/stats")[1]["totalCount"] == before


@pytest.fixture(scope="module")
def http(http_cluster: object) -> HttpClient:  # module-scoped twin of conftest's `http`, for `unchanged`
    """A plain HTTP client of the shared cluster's HTTP service."""
    return HttpClient(http_cluster.http_url)  # type: ignore[attr-defined]


def _json_error(status: int, raw: bytes) -> dict[str, object]:
    reply = json.loads(raw)
    assert set(reply) == {"code", "message", "details"} and reply["message"], reply
    return reply


def test_oversize_bodies_are_413(strict: HttpClient, unchanged: None) -> None:
    """A body, NDJSON line or uploaded file over the limit: 413 with a JSON error, before or while reading it."""
    big = json.dumps({"text": "x" * (STRICT_MAX_BODY + 10)}).encode()
    status, _h, raw = strict.request("POST", "/v1/search", big, "application/json")
    assert status == 413 and "limit" in _json_error(status, raw)["message"]
    line = json.dumps({"id": "big", "text": "y" * (STRICT_MAX_BODY + 10)}).encode() + b"\n"
    status, _h, raw = strict.request("POST", "/v1/items:ingest", line, "application/x-ndjson")
    assert status == 413 and _json_error(status, raw)["code"] == 3


def test_oversize_body_without_length_is_413(strict: HttpClient, unchanged: None) -> None:
    """A chunked body (no Content-Length) is cut off at the limit as it streams in."""
    connection = socket.create_connection((strict.host, strict.port), timeout=10)
    try:
        head = (
            b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        connection.sendall(head)
        chunk = b"a" * 32768
        for _ in range(4):
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = connection.recv(65536)
    finally:
        connection.close()
    assert reply.startswith(b"HTTP/1.1 413") and b'"code": 3' in reply


def test_bad_json_base64_and_fields_are_400(http: HttpClient, unchanged: None) -> None:
    """Malformed JSON, bad base64, unknown fields, wrong types, two queries at once: 400 saying what is wrong."""
    cases = {
        b'{"text": "a red circle"': "not valid JSON",
        b'["text"]': "must be a JSON object",
        b'{"image": "!!!not base64!!!"}': "not valid base64",
        b'{"image": "abcde"}': "not valid base64",
        b'{"text": "a", "colour": "red"}': "colour",
        b'{"text": "a", "k": "many"}': "k",
        b'{"text": "a", "likeId": "b"}': "oneof",
        b'{"text": "a", "target": "MODALITY_SMELL"}': "MODALITY_SMELL",
        b'\xff\xfe{"text": "a"}': "not valid JSON",
    }
    for body, words in cases.items():
        status, _h, raw = http.request("POST", "/v1/search", body, "application/json")
        assert status == 400, (body, raw)
        reply = _json_error(status, raw)
        assert reply["code"] == 3 and words in str(reply["message"]), (body, reply)


def test_bad_ndjson_stores_nothing_or_stops_at_the_bad_line(http: HttpClient, unchanged: None) -> None:
    """A bad first line: 400, nothing sent. A bad later line: the good lines before it are acknowledged (and
    then deleted here), and the stream ends with an error line naming it."""
    status, _h, raw = http.request(
        "POST", "/v1/items:ingest", b'{"id": "h1", "image": "%%%"}\n', "application/x-ndjson"
    )
    assert status == 400 and "line 1" in str(_json_error(status, raw)["message"])
    body = (
        b'{"id": "hostile-ok", "text": "fine"}\n'
        b'{"id": "hostile-bad", "text": 5, "extra": 1}\n'
        b'{"id": "hostile-after", "text": "x"}\n'
    )
    status, _h, raw = http.request("POST", "/v1/items:ingest", body, "application/x-ndjson")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert status == 200 and lines[0]["id"] == "hostile-ok" and "line 2" in lines[-1]["error"]["message"]
    assert http.json("GET", "/v1/items?ids=hostile-bad&ids=hostile-after")[1]["missing"] == [
        "hostile-bad",
        "hostile-after",
    ]
    assert http.json("DELETE", "/v1/items/hostile-ok")[1]["deleted"] == 1


def test_ids_that_try_to_escape(http: HttpClient, http_gallery: Gallery, unchanged: None) -> None:
    """Ids with ../, encoded slashes, NUL bytes or 300 bytes: a 4xx JSON error on every id route, never a file."""
    record = http_gallery[1][0]
    relative = os.path.relpath("/etc/passwd", Path(record["path"]).parent)
    ids = [
        "../../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        relative.replace("/", "%2F"),
        "%00",
        f"{record['id']}%00",
        "a" * 300,
        "%2Fetc%2Fpasswd",
    ]
    for item_id in ids:
        for suffix in ("", "/thumbnail", "/media"):
            status, headers, raw = http.request("GET", f"/v1/items/{item_id}{suffix}")
            assert 400 <= status < 500, (item_id, suffix, status, raw[:200])
            assert headers["content-type"].startswith("application/json") and b"root:" not in raw
            _json_error(status, raw)


def test_stored_paths_outside_the_media_roots_are_refused(
    http: HttpClient, http_gallery: Gallery, tmp_path: Path
) -> None:
    """Items whose metadata `path` leaves the roots (absolute, ../, a symlink, relative) get no thumbnail or media."""
    root = http_gallery[0]
    link = root / "escape.png"
    secret = tmp_path / "secret.png"
    secret.write_bytes(Path(http_gallery[1][0]["path"]).read_bytes())
    link.symlink_to(secret)
    paths = {
        "escape-abs": "/etc/passwd",
        "escape-dots": f"{root}/../../../../etc/passwd",
        "escape-link": str(link),
        "escape-rel": "images/" + Path(http_gallery[1][0]["path"]).name,
        "escape-nonmedia": str(root / "captions.jsonl"),
    }
    lines = b"".join(
        json.dumps({"id": item_id, "text": "a secret", "metadata": {"path": path}}).encode() + b"\n"
        for item_id, path in paths.items()
    )
    status, _h, raw = http.request("POST", "/v1/items:ingest", lines, "application/x-ndjson")
    assert status == 200 and len(raw.splitlines()) == len(paths)
    try:
        for item_id in paths:
            for suffix in ("/thumbnail", "/media"):
                status, _h, raw = http.request("GET", f"/v1/items/{item_id}{suffix}")
                assert status == 404, (item_id, suffix, raw[:200])
                message = str(_json_error(status, raw)["message"])
                assert "root:" not in message and "/etc" not in message and str(tmp_path) not in message
    finally:
        http.json("POST", "/v1/items:delete", {"ids": list(paths)})
        link.unlink()


def test_header_floods(strict: HttpClient, unchanged: None) -> None:
    """Over the header limits: 431 JSON; far over: the parser refuses with a 4xx and closes the connection."""
    many = {f"X-Flood-{n}": "v" for n in range(30)}
    status, _h, raw = strict.request("GET", "/v1/stats", headers=many)
    assert status == 431 and "headers" in str(_json_error(status, raw)["message"])
    status, _h, raw = strict.request("GET", "/v1/stats", headers={"X-Big": "v" * 5000})
    assert status == 431 and "bytes" in str(_json_error(status, raw)["message"])
    flood = {f"X-Flood-{n}": "v" for n in range(200)}
    status, _h, _raw = strict.request("GET", "/v1/stats", headers=flood)
    assert 400 <= status < 500


def test_slow_clients_are_cut_off(strict: HttpClient, unchanged: None) -> None:
    """Headers trickled in: the connection is closed after the idle timeout. A stalled body: 408 JSON."""
    connection = socket.create_connection((strict.host, strict.port), timeout=15)
    try:
        started = time.monotonic()
        connection.sendall(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert connection.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 8
    finally:
        connection.close()
    connection = socket.create_connection((strict.host, strict.port), timeout=15)
    try:
        connection.sendall(
            b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        reply = connection.recv(4096)
    finally:
        connection.close()
    assert reply.startswith(b"HTTP/1.1 408") and b'"code": 4' in reply


def test_multipart_abuse(http: HttpClient, strict: HttpClient, unchanged: None) -> None:
    """Unknown parts, nameless files and oversize files in a multipart upload: 400/413 JSON, nothing stored."""
    from tests.http.helpers import multipart

    body, content_type = multipart([("passwd", "x", b"data", "text/plain")])
    status, _h, raw = http.request("POST", "/v1/items:ingest", body, content_type)
    assert status == 400 and "unexpected multipart part" in str(_json_error(status, raw)["message"])
    body, content_type = multipart([("image", None, b"\x89PNG", "image/png")])
    status, _h, raw = http.request("POST", "/v1/items:ingest", body, content_type)
    assert status == 400 and "file name" in str(_json_error(status, raw)["message"])
    body, content_type = multipart([("image", "big.png", b"\0" * (STRICT_MAX_BODY + 1), "image/png")])
    status, _h, raw = strict.request("POST", "/v1/items:ingest", body, content_type)
    assert status == 413
    body, content_type = multipart([("image", "q.png", base64.b64encode(b"not an image"), "image/png")])
    status, _h, raw = http.request("POST", "/v1/search", body, content_type)
    assert status == 400 and _json_error(status, raw)["code"] == 3
