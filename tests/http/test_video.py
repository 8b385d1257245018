"""Videos over HTTP: IngestVideo as NDJSON, moment search, the file with Range requests, and the page's player."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossmodal.cluster import LocalCluster
from tests.http.helpers import HttpClient
from tests.http.test_page import WAIT_SECONDS, browser  # noqa: F401 - the headless chromium fixture

av = pytest.importorskip("av")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from crossmodal.scenes.video import render_video, video_spec  # noqa: E402
from crossmodal.video.decode import sample_video  # noqa: E402

Gallery = tuple[Path, list[dict[str, str]]]
VIDEO_ID = "http-clip"


def _lines(path: Path, video_id: str) -> list[bytes]:
    """The NDJSON of one video: its header, then one line per sampled frame."""
    info, frames = sample_video(path)
    header = {
        "header": {
            "id": video_id,
            "metadata": {"path": str(path), "kind": "video"},
            "durationSeconds": info.duration,
            "sampleIntervalSeconds": 1.0,
        }
    }
    lines = [json.dumps(header).encode()]
    for frame in frames:
        image = base64.b64encode(frame.jpeg).decode()
        item = {"frame": {"seconds": frame.seconds, "image": image, "sceneChange": frame.scene_change}}
        lines.append(json.dumps(item).encode())
    return lines


@pytest.fixture(scope="module")
def video(http_cluster: LocalCluster, http_gallery: Gallery) -> Iterator[tuple[Path, Any]]:
    """A rendered clip under the media root, stored through POST /v1/videos:ingest; deleted afterwards."""
    spec = video_spec(31, duration=8.0)
    path = render_video(spec, http_gallery[0] / "videos" / "clip.mp4")
    http = HttpClient(http_cluster.http_url)
    body = b"\n".join(_lines(path, VIDEO_ID)) + b"\n"
    status, _h, raw = http.request("POST", "/v1/videos:ingest", body, "application/x-ndjson")
    assert status == 200, raw
    reply = json.loads(raw)
    assert reply["id"] == VIDEO_ID and reply["frames"] >= 8
    yield path, spec
    http.json("DELETE", f"/v1/items/{VIDEO_ID}")


def test_video_moments_and_media_over_http(http: HttpClient, video: tuple[Path, Any]) -> None:
    """A moment search finds the clip with its span; its file streams with Range requests."""
    path, spec = video
    query = spec.appearances[0].query
    status, reply = http.json("POST", "/v1/search", {"text": query, "k": 3, "target": "MODALITY_VIDEO"})
    assert status == 200 and reply["results"], reply
    moment = next(r for r in reply["results"] if r["id"] == VIDEO_ID)
    assert moment["modality"] == "MODALITY_VIDEO" and moment["endSeconds"] >= moment["startSeconds"]
    assert moment["metadata"]["path"] == str(path)
    status, headers, data = http.request("GET", f"/v1/items/{VIDEO_ID}/media", headers={"Range": "bytes=0-99"})
    assert status == 206 and headers["content-type"] == "video/mp4" and data == path.read_bytes()[:100]
    status, reply = http.json("GET", f"/v1/items/{VIDEO_ID}/thumbnail")
    assert status == 404 and "play /media" in reply["message"]


def test_a_bad_frame_stores_no_video(http: HttpClient, video: tuple[Path, Any]) -> None:
    """IngestVideo stores nothing until its stream ends: a bad third line cancels it, 400, nothing stored."""
    lines = _lines(video[0], "http-clip-broken")
    lines[2] = b'{"frame": {"seconds": 2.0, "image": "not base64!"}}'
    status, _h, raw = http.request("POST", "/v1/videos:ingest", b"\n".join(lines) + b"\n", "application/x-ndjson")
    assert status == 400 and "line 3" in json.loads(raw)["message"]
    assert http.json("GET", "/v1/items/http-clip-broken")[0] == 404


def test_the_page_plays_a_moment(browser: Any, http_cluster: LocalCluster, video: tuple[Path, Any]) -> None:  # noqa: F811
    """With "video moments" as the target, a result is a player that starts at the moment."""
    driver = browser
    driver.get(http_cluster.http_url + "/")
    Select(driver.find_element(By.ID, "target")).select_by_value("MODALITY_VIDEO")
    driver.find_element(By.ID, "query").send_keys(video[1].appearances[0].query)
    driver.find_element(By.ID, "search-button").click()
    player = WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#results .result[data-id="{VIDEO_ID}"] video'),
        message="timed out waiting for the video result",
    )[0]
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script("return arguments[0].readyState >= 1;", player),
        message="timed out waiting for the video's metadata",
    )
    src = player.get_attribute("src")
    assert f"/v1/items/{VIDEO_ID}/media#t=" in src
    start = float(src.split("#t=")[1].split(",")[0])
    assert driver.execute_script("return arguments[0].currentTime;", player) == pytest.approx(start, abs=0.5)
