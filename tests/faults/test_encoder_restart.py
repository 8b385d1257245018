"""kill -9 of a text encoder mid-ingest: retried on another address, or failed retryably with nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossmodal.client import Ack, Client, IngestJournal, Item
from crossmodal.cluster import LocalCluster
from tests.faults.helpers import (
    assert_stored_once,
    fault_spec,
    ingest_killing,
    stored,
    text_items,
    wait_whole,
)
from tests.reliability import record
from tests.support import metric_value, metrics_text

ITEMS = 3000


def ingest_with_kill(
    cluster: LocalCluster, items: list[Item], journal: IngestJournal, victim: str, at: int
) -> list[Ack]:
    """Ingest `items` and kill -9 `victim` once `at` acks arrived; every ack of a stream that must not break."""
    acks, ended = ingest_killing(cluster, items, journal, victim, at)
    assert ended == "complete", f"the ingest stream broke with {ended}"
    return acks


@pytest.mark.timeout(600)
def test_a_killed_encoder_is_failed_over_to_the_other_address(tmp_path: Path, bundle_dir: Path) -> None:
    with LocalCluster(fault_spec(tmp_path / "c", bundle_dir, text_encoders=2)) as cluster:
        assert cluster.gateway is not None
        first = text_items("a", ITEMS)
        acks = ingest_with_kill(cluster, first, IngestJournal(), "encoder_text", ITEMS * 3 // 10)
        failed = [a for a in acks if not a.ok]
        assert len(acks) == ITEMS and not failed, f"{len(failed)} failed, e.g. {failed[:1]}"
        # The killed encoder comes back on its address; with the other one killed, it alone must serve.
        cluster.restart("encoder_text")
        wait_whole(cluster.address)
        second = text_items("b", ITEMS)
        again = ingest_with_kill(cluster, second, IngestJournal(), "encoder_text-1", ITEMS * 3 // 10)
        assert len(again) == ITEMS and all(a.ok for a in again), [a for a in again if not a.ok][:1]
        with Client(cluster.address) as client:
            assert_stored_once(client, first + second)
            assert client.stats().total_count == 2 * ITEMS
        gateway_metrics = metrics_text(cluster.gateway.metrics_port)
        retries = metric_value(gateway_metrics, "crossmodal_gateway_encoder_retries_total", modality="text")
        assert retries >= 2
        record(
            "faults",
            "kill -9 of a text encoder mid-ingest, two encoders",
            f"2 x {ITEMS:,} text items; one of two text encoders killed at 30% of the stream, restarted, "
            "then the other killed at 30% of a second stream",
            f"all {2 * ITEMS:,} acknowledged OK and stored once; {retries:.0f} encoder calls retried on the other "
            "address; the restarted encoder was used again without operator action",
        )


@pytest.mark.timeout(600)
def test_a_killed_lone_encoder_fails_items_retryably_and_resume_completes(tmp_path: Path, bundle_dir: Path) -> None:
    with LocalCluster(fault_spec(tmp_path / "c", bundle_dir)) as cluster:
        items = text_items("c", ITEMS)
        journal = IngestJournal(tmp_path / "c.journal")
        acks = ingest_with_kill(cluster, items, journal, "encoder_text", ITEMS * 3 // 10)
        assert len(acks) == ITEMS and len({a.id for a in acks}) == ITEMS
        failed = [a for a in acks if not a.ok]
        assert failed, "the encoder was killed before the last batch, so some items must have failed"
        assert all(a.retryable and a.code.name == "UNAVAILABLE" for a in failed), failed[:1]
        assert all("text encoder" in a.message for a in failed), failed[:1]
        ok_ids = {a.id for a in acks if a.ok}
        assert journal.acknowledged == ok_ids
        with Client(cluster.address) as client:
            # Nothing half-written: an item that failed to encode is not stored at all.
            found, missing, _ = stored(client, [a.id for a in failed])
            assert not found and len(missing) == len(failed)
            assert_stored_once(client, [i for i in items if i.id in ok_ids])
        cluster.restart("encoder_text")
        wait_whole(cluster.address)
        journal.close()
        with IngestJournal(tmp_path / "c.journal") as resumed, Client(cluster.address) as client:
            assert resumed.acknowledged == ok_ids
            resent = list(client.ingest_resumable(items, resumed))
        assert sorted(a.id for a in resent) == sorted(a.id for a in failed)
        assert all(a.ok for a in resent), [a for a in resent if not a.ok][:1]
        with Client(cluster.address) as client:
            assert_stored_once(client, items)
            assert client.stats().total_count == ITEMS
        record(
            "faults",
            "kill -9 of the only text encoder mid-ingest",
            f"{ITEMS:,} text items; the one text encoder killed at 30% of the stream, restarted, client resumed "
            "from its journal file",
            f"{len(failed):,} items acknowledged UNAVAILABLE (retryable) and none of them stored; the resume "
            f"re-sent exactly those {len(failed):,}; all {ITEMS:,} stored once with their metadata",
        )
