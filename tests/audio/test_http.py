"""Sounds over HTTP/JSON: the new RPC and fields in OpenAPI, search by an uploaded sound, sounds streamed in
as NDJSON, and the stored file served for the page's audio player."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from crossmodal.client import Client
from crossmodal.cluster import LocalCluster
from tests.audio.conftest import RATE, tone, wav
from tests.http.helpers import HttpClient


def _multipart(request: dict[str, object], field: str, data: bytes) -> tuple[bytes, str]:
    boundary = "soundboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n\r\n{json.dumps(request)}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="q.wav"\r\n'.encode()
        + b"Content-Type: audio/wav\r\n\r\n"
        + data
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_sounds_over_http(audio_cluster: LocalCluster, tmp_path: Path) -> None:
    http = HttpClient(audio_cluster.http_url)
    status, _, body = http.request("GET", "/v1/openapi.json")
    spec = json.loads(body)
    assert status == 200 and "/v1/sounds:ingest" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert "audio" in json.dumps(schemas["crossmodal.v1.SearchRequest"]) and "crossmodal.v1.AudioChunk" in schemas

    # A sound streamed in as NDJSON: the header line, then chunks of base64 PCM.
    pcm = (tone(440, 2.5) * 32767).astype("<i2").tobytes()
    lines = [{"header": {"id": "streamed", "sampleRate": RATE, "durationSeconds": 2.5}}]
    for start in range(0, len(pcm), 20_000):
        chunk = {"pcm": base64.b64encode(pcm[start : start + 20_000]).decode(), "firstSample": str(start // 2)}
        lines.append({"chunk": chunk})
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    status, _, body = http.request("POST", "/v1/sounds:ingest", ndjson, "application/x-ndjson")
    assert status == 200, body
    assert json.loads(body)["windows"] == 4

    # Search with an uploaded sound; the stored file plays from /media as audio.
    path = tmp_path / "chime.wav"
    path.write_bytes(wav(tone(1500, 0.7)))
    with Client(audio_cluster.address) as client:
        client.ingest_audio_file("chime", path)
    form, content_type = _multipart({"target": "MODALITY_AUDIO", "k": 2}, "audio", path.read_bytes())
    status, _, body = http.request("POST", "/v1/search", form, content_type)
    assert status == 200, body
    top = json.loads(body)["results"][0]
    assert (top["id"], top["modality"]) == ("chime", "MODALITY_AUDIO")
    status, headers, body = http.request("GET", "/v1/items/chime/media")
    assert status == 200 and headers["content-type"].startswith("audio/") and body == path.read_bytes()
