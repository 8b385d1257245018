"""The CLI and SDK against a real cluster: `up`, `ingest` (resume), `search` (table, JSON, HTML), `stats`, `get`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from crossmodal.client import Client, StoredItem
from services.common.placement import Placement
from tests.support import ROOT, up_command, wait_for


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossmodal", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _cli_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with its stdout on a pipe whose reader is already closed."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "crossmodal", *args],
            cwd=ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)


def test_up_ingest_search_stats(tmp_path: Path, bundle_dir: Path, gallery: list[dict[str, str]]) -> None:
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            up_command(tmp_path / "data", bundle_dir),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        pattern = re.compile(r"gateway at ([0-9.]+:[0-9]+)")
        line = wait_for(lambda: pattern.search(log.read_text()) or up.poll(), 120, "cluster up")
        assert up.poll() is None, log.read_text()
        address = line.group(1)
        assert (tmp_path / "data" / "logs" / "gateway.log").exists()

        images = Path(gallery[0]["path"]).parent
        jsonl = tmp_path / "texts.jsonl"
        jsonl.write_text(
            "\n".join(
                json.dumps({"id": f"text-{i}", "text": r["caption"], "tags": ["demo"]})
                for i, r in enumerate(gallery[:10])
            )
            + '\n{"id": "bad", "text": ""}\n'
        )
        state = tmp_path / "state.acked"
        first = _cli("ingest", str(images), str(jsonl), "--address", address, "--state", str(state))
        assert first.returncode == 1  # one bad record
        assert "item/s" in first.stderr and "100%" in first.stderr
        assert "ingested 50 of 51 items sent" in first.stdout
        assert "INVALID_ARGUMENT" in first.stdout
        again = _cli("ingest", str(images), str(jsonl), "--address", address, "--state", str(state), "--quiet")
        assert "50 of 51 items already acknowledged" in again.stderr
        assert "ingested 0 of 1 items sent" in again.stdout

        html = tmp_path / "results.html"
        search = _cli(
            "search", gallery[2]["caption"], "--target", "text", "--k", "3", "--address", address, "--html", str(html)
        )
        assert search.returncode == 0, search.stderr
        assert "text-2" in search.stdout.splitlines()[1]
        page = html.read_text()
        assert "text-2" in page and page.count("class='hit'") == 3
        image_search = _cli(
            "search", "--image", gallery[4]["path"], "--target", "image", "--json", "--address", address
        )
        hits = json.loads(image_search.stdout)["hits"]
        assert hits[0]["id"] == Path(gallery[4]["path"]).name
        filtered = _cli("search", "anything", "--filter", "tag:demo", "--k", "50", "--json", "--address", address)
        assert len(json.loads(filtered.stdout)["hits"]) == 10
        # Output piped into a reader that already went away (`| head`): the status of SIGPIPE, no traceback.
        closed = _cli_into_closed_pipe("search", "anything", "--k", "50", "--address", address)
        assert closed.returncode == 128 + signal.SIGPIPE and closed.stderr == "", closed.stderr
        stats = _cli("stats", "--address", address)
        assert "50 items" in stats.stdout and stats.stdout.count("shard ") == 2
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    assert "stopped" in log.read_text()


def test_get_returns_stored_items_with_their_shard(client: Client, gallery: list[dict[str, str]]) -> None:
    images = [r["id"] for r in gallery]
    ids = [images[0], images[0] + "#caption", "never-stored", *images[1:]]
    found, missing = client.get(ids)
    assert missing == ["never-stored"]
    assert all(type(item) is StoredItem for item in found)
    assert [item.id for item in found] == [i for i in ids if i != "never-stored"]  # request order
    image, caption = found[0], found[1]
    assert (image.modality, image.metadata, image.tags) == ("image", {"parity": "even", "kind": "image"}, ["scene"])
    assert (caption.modality, caption.metadata["kind"], caption.tags) == ("text", "caption", [])
    # The shard each item is stored on, as the gateway routes it; the gallery spans both shards.
    assert {item.id: item.shard for item in found} == {item.id: Placement(2).shard_of(item.id) for item in found}
    assert {item.shard for item in found} == {0, 1}
    assert not hasattr(image, "score")  # nothing was ranked
