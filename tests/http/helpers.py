"""A plain HTTP client (http.client from the standard library) for the HTTP service tests."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any


class HttpClient:
    """Requests to one base URL; every call opens its own connection, so a refused request cannot affect the next."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            all_headers = dict(headers or {})
            if content_type is not None:
                all_headers["Content-Type"] = content_type
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, value: Any = None, **kwargs: Any) -> tuple[int, Any]:
        """(status, decoded JSON body) of a request with a JSON body (or none)."""
        body = None if value is None else json.dumps(value).encode()
        status, headers, data = self.request(
            method, path, body, "application/json" if body is not None else None, **kwargs
        )
        assert headers.get("content-type", "").startswith("application/json"), (status, headers, data[:300])
        return status, json.loads(data)


def multipart(fields: list[tuple[str, str | None, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (name, filename or None, data, content type) parts, and its content type."""
    boundary = "crossmodal-test-boundary-7d1f"
    out = bytearray()
    for name, filename, data, content_type in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
