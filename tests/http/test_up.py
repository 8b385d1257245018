"""`crossmodal up` starts the HTTP service beside the gateway, prints its URL, and restarts it when it dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.cli.upcli import FREE_PORTS, ready_info, start_up, wait_reported
from tests.http.helpers import HttpClient
from tests.support import wait_for


def test_up_serves_the_page_and_restarts_the_http_service(tmp_path: Path, bundle_dir: Path) -> None:
    """The printed URL serves the page and is ready; after kill -9 the service is back on the same port."""
    media = tmp_path / "photos"
    media.mkdir()
    data = tmp_path / "data"
    up, output = start_up(
        tmp_path,
        *("--data-dir", str(data), "--bundle", str(bundle_dir), "--shards", "1", "--port", "0", *FREE_PORTS),
        *("--media-root", str(media)),
    )
    try:
        url = wait_reported(up, output, r"search page and HTTP/JSON API: (http://[0-9.]+:[0-9]+)/", "the page's URL")
        assert f"thumbnails are served for files under: {media}" in output.read_text()
        client = HttpClient(url, timeout=10)
        assert client.request("GET", "/readyz")[0] == 200
        assert client.request("GET", "/")[0] == 200
        before = ready_info(data / "logs")["http"]
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(
            lambda: "http is SERVING again" in output.read_text(), 60, "the supervisor to restart the HTTP service"
        )
        assert ready_info(data / "logs")["http"]["port"] == before["port"]
        assert client.request("GET", "/readyz")[0] == 200
    finally:
        up.send_signal(signal.SIGINT)
        status = up.wait(90)
    assert status == 0, output.read_text()
