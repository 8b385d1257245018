"""`crossmodal ingest` and `crossmodal search --audio` on real sound files, against a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from crossmodal.cluster import LocalCluster
from tests.audio.conftest import RATE, noise, tone, wav, write_sound


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Run from another directory: every path the CLI is given or prints must work from anywhere.
    return subprocess.run(
        [sys.executable, "-m", "crossmodal", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_ingest_a_folder_of_sounds_and_search_it_by_sound(audio_cluster: LocalCluster, tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    (sounds / "long").mkdir(parents=True)
    walk = np.concatenate([noise(2, seed=3), tone(700, 2), noise(2, seed=4, amplitude=0.05)])
    (sounds / "long" / "walk.wav").write_bytes(wav(walk))
    (sounds / "bell.wav").write_bytes(wav(tone(1800, 0.8)))
    write_sound(sounds / "buzz.opus", tone(90, 0.9, rate=48_000), "libopus", rate=48_000)
    (sounds / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 2000)
    (sounds / "notes.txt").write_text("not a sound: left alone")
    address = ("--address", audio_cluster.address)

    ingest = _cli("ingest", str(sounds), *address, "--state", str(tmp_path / "state"), "--quiet", cwd=tmp_path)
    assert ingest.returncode == 1, ingest.stdout + ingest.stderr  # one file failed, with its reason
    assert "ingested 3 of 4 items sent" in ingest.stdout
    assert "INVALID_ARGUMENT (corrupt): broken.mp3: not a readable audio file" in ingest.stdout

    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav(walk[2 * RATE : 3 * RATE]))  # the window at 2-3 s of long/walk.wav
    table = _cli("search", "--audio", str(clip), "--target", "audio", "--k", "2", *address, cwd=sounds)
    assert table.returncode == 0, table.stderr
    first = table.stdout.splitlines()[0].split()
    assert first[0] == "long/walk.wav" and first[1].startswith("00:0") and float(first[2]) > 0.99

    found = _cli("search", "--audio", str(clip), "--target", "audio", "--json", *address, cwd=tmp_path)
    hits = json.loads(found.stdout)["hits"]
    assert {"id", "start", "end", "score"} <= hits[0].keys()
    assert hits[0]["id"] == "long/walk.wav" and hits[0]["start"] <= 2.0 < 3.0 <= hits[0]["end"]
    bell = next(h for h in hits if h["id"] == "bell.wav")
    assert bell["start"] == 0 and abs(bell["end"] - 0.8) < 0.01  # a short sound: whole

    page = tmp_path / "out" / "results.html"
    html = _cli("search", "--audio", str(clip), "--target", "audio", "--html", str(page), *address, cwd=tmp_path)
    assert html.returncode == 0, html.stderr
    text = page.read_text()
    walk_uri = (sounds / "long" / "walk.wav").resolve().as_uri()
    assert f"<audio controls preload='metadata' src='{walk_uri}#t=" in text
    assert f"query sound:<br><audio controls src='{clip.resolve().as_uri()}'" in text

    long_query = tmp_path / "long-query.wav"
    long_query.write_bytes(wav(walk))
    cut = _cli("search", "--audio", str(long_query), "--target", "audio", *address, cwd=tmp_path)
    assert "only its first clip was searched with" in cut.stderr
