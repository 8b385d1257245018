"""`crossmodal demo` with an audio tower ingests its sound set and shows audio queries; without, one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def _demo(bundle: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = ["demo", "--bundle", str(bundle), "--data-dir", str(data), "--count", "12", "--videos", "1", "--quiet"]
    return subprocess.run(
        [sys.executable, "-m", "crossmodal", *command, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_shows_text_to_audio_audio_to_text_and_a_moment(audio_bundle: Path, tmp_path: Path) -> None:
    run = _demo(audio_bundle, tmp_path / "demo")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "12 sounds, their captions and 2 recordings" in out
    assert out.count("== text -> audio: ") == 4 and "(truth: sound-00.wav)" in out
    assert out.count("== audio -> text: ") == 3
    moment = out.split("== text -> audio moments: ")[1]
    assert "(in recording-0.wav 00:08-00:12)" in moment.splitlines()[0]  # the third 4 s sound of the recording
    assert all(line.count(":") >= 2 for line in moment.splitlines()[1:4])  # sound  mm:ss-mm:ss  score
    assert "#caption" in out.split("== audio -> text: ")[1]  # the sounds' own captions answer
    page = (tmp_path / "demo" / "results.html").read_text()
    assert "<audio controls preload='metadata' src='file://" in page

    again = _demo(audio_bundle, tmp_path / "demo", "--no-audio")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "audio: skipped: the cluster has no audio encoder" in again.stdout
    assert "== text -> audio" not in again.stdout
