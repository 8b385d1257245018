"""The search page plays sounds: a dropped sound file finds its stored sound, shown in an <audio> player."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from crossmodal.client import Client
from crossmodal.cluster import LocalCluster
from tests.audio.conftest import tone, wav

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from tests.http.test_page import _search_and_wait, _wait, browser  # noqa: E402, F401 - the browser fixture

DROP = """
    const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], "query.wav", {type: "audio/wav"}));
    const zone = document.getElementById("drop");
    zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
"""


def _player_ready(driver: Any) -> bool:
    """Whether the first result's audio player loaded its sound's metadata (the file came from /media)."""
    return bool(
        driver.execute_script(
            "const a = document.querySelector('#results .result audio');"
            "return a !== null && a.readyState >= 1 && a.duration > 0;"
        )
    )


def test_a_dropped_sound_finds_its_sound_in_an_audio_player(
    browser: Any,  # noqa: F811
    audio_cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    path = tmp_path / "whistle.wav"
    path.write_bytes(wav(tone(2500, 0.9)))
    with Client(audio_cluster.address) as client:
        client.ingest_audio_file("whistle", path)
    driver = browser
    driver.get(audio_cluster.http_url + "/")
    Select(driver.find_element(By.ID, "target")).select_by_value("MODALITY_AUDIO")
    data = base64.b64encode(path.read_bytes()).decode()
    _search_and_wait(driver, lambda: driver.execute_script(DROP, data))
    first = driver.find_element(By.CSS_SELECTOR, "#results .result")
    assert first.get_attribute("data-id") == "whistle"
    player = first.find_element(By.TAG_NAME, "audio")
    assert "/v1/items/whistle/media#t=0" in player.get_attribute("src")
    _wait(driver, _player_ready, "the audio player to load the sound")
    assert driver.find_element(By.CSS_SELECTOR, "#drop-label audio")  # the query sound is playable too
