"""The client's ingest journal: what a killed client process leaves behind is read back safely."""

from __future__ import annotations

from pathlib import Path

import grpc

from crossmodal.client import Ack, IngestJournal, Item


def _ack(item_id: str, ok: bool = True) -> Ack:
    return Ack(item_id, ok, grpc.StatusCode.OK if ok else grpc.StatusCode.UNAVAILABLE, "", 0, [])


def test_only_ok_acks_are_journaled_and_pending_skips_them(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with IngestJournal(path) as journal:
        for ack in (_ack("a"), _ack("b", ok=False), _ack("line\nbreak"), _ack("a")):
            journal.record(ack)
    reopened = IngestJournal(path)
    assert reopened.acknowledged == {"a", "line\nbreak"}
    items = [Item(i, text=i) for i in ("a", "b", "c", "line\nbreak")]
    assert [i.id for i in reopened.pending(items)] == ["b", "c"]
    assert path.read_text().count("\n") == 2  # an id acknowledged twice is written once


def test_a_torn_last_line_is_dropped_and_older_plain_files_load(tmp_path: Path) -> None:
    path = tmp_path / "j"
    # A plain id (the older format), a JSON id, a damaged line, and an append cut short by a crash.
    path.write_text('plain-id\n"json-id"\n"dam\\aged"\n"torn-ap')
    with IngestJournal(path) as journal:
        assert journal.acknowledged == {"plain-id", "json-id"}
        journal.record(_ack("next"))
    assert IngestJournal(path).acknowledged == {"plain-id", "json-id", "next"}
    assert path.read_text().endswith('"dam\\aged"\n"next"\n')
