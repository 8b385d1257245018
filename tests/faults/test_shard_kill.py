"""kill -9 of a shard while searches run: answers keep coming, name the shard, and are complete after a restart."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from crossmodal.client import Client
from crossmodal.cluster import LocalCluster
from tests.faults.helpers import fault_spec, text_items
from tests.reliability import record
from tests.support import wait_for

QUERIES = ("a red circle", "green square left", "large blue triangle", "small note")


@dataclass(frozen=True)
class Answer:
    """One search made by the background thread: when it began and ended, which shards it missed, or its error."""

    started: float
    ended: float
    partial: tuple[int, ...]
    hits: int
    error: str | None


class Searcher(threading.Thread):
    """Searches without pause (require_complete unset) and keeps every answer."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.answers: list[Answer] = []
        self.halt = threading.Event()

    def run(self) -> None:
        """Search until halted."""
        with Client(self.address) as client:
            n = 0
            while not self.halt.is_set():
                started = time.monotonic()
                try:
                    result = client.search(QUERIES[n % len(QUERIES)], k=20, timeout=10)
                    answer = Answer(started, time.monotonic(), tuple(result.partial_shards), len(result.hits), None)
                except grpc.RpcError as exc:
                    answer = Answer(started, time.monotonic(), (), 0, f"{exc.code().name}: {exc.details()}")
                self.answers.append(answer)
                n += 1

    def count(self, since: float = 0.0, partial: tuple[int, ...] = ()) -> int:
        """How many answers ended after `since` with exactly these partial shards."""
        return sum(1 for a in list(self.answers) if a.ended > since and a.error is None and a.partial == partial)


@pytest.mark.timeout(600)
def test_a_killed_shard_is_named_while_down_and_used_again_after_restart(tmp_path: Path, bundle_dir: Path) -> None:
    victim, number = "index-1-0", 1
    with LocalCluster(fault_spec(tmp_path / "c", bundle_dir)) as cluster:
        items = text_items("s", 400)
        with Client(cluster.address) as client:
            assert all(a.ok for a in client.ingest(items))
        searcher = Searcher(cluster.address)
        searcher.start()
        try:
            wait_for(lambda: searcher.count() >= 20, 60, "complete answers before the kill")
            killed_at = time.monotonic()
            cluster.kill(victim)
            dead_at = time.monotonic()
            wait_for(lambda: searcher.count(since=killed_at, partial=(number,)) >= 30, 60, "partial answers")
            with Client(cluster.address) as client, pytest.raises(grpc.RpcError) as refused:
                client.search("a red circle", k=5, require_complete=True)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"[{number}]" in refused.value.details()
            restart_began = time.monotonic()
            cluster.restart(victim)
            serving_at = time.monotonic()
            # No call to the gateway: it must find the shard again by itself.
            wait_for(lambda: searcher.count(since=serving_at) >= 1, 60, "a complete answer after the restart")
            recovered_at = next(a.ended for a in list(searcher.answers) if a.ended > serving_at and not a.partial)
            wait_for(lambda: searcher.count(since=recovered_at) >= 20, 60, "complete answers after the recovery")
        finally:
            searcher.halt.set()
            searcher.join(30)
        answers = list(searcher.answers)
        errors = [a.error for a in answers if a.error is not None]
        assert not errors, f"{len(errors)} searches failed, e.g. {errors[0]}"
        before = [a for a in answers if a.ended < killed_at]
        # A search that began before the process was reaped may still have had the shard's reply.
        outage = [a for a in answers if dead_at < a.started and a.ended < restart_began]
        after = [a for a in answers if a.started > recovered_at]
        assert before and all(a.partial == () and a.hits == 20 for a in before)
        # Everything answered while the shard was down names it; what it served is missing, the rest is there.
        assert outage and all(a.partial == (number,) and a.hits > 0 for a in outage)
        assert after and all(a.partial == () and a.hits == 20 for a in after)
        # Between "SERVING" and the gateway's first complete answer, only answers naming the shard.
        assert all(a.partial in ((), (number,)) for a in answers)
        with Client(cluster.address) as client:
            assert client.stats().total_count == len(items)
        recovery = recovered_at - serving_at
        assert recovery < 30, recovery
        record(
            "faults",
            "kill -9 of a shard during searches",
            f"searches without pause on a 2 x 1 cluster; {victim} killed, restarted on its port after "
            f"{restart_began - killed_at:.1f} s, SERVING again {serving_at - killed_at:.1f} s after the kill",
            f"{len(answers)} searches, none failed; all {len(outage)} answered during the outage named shard "
            f"{number} in partial_shards; complete again {recovery:.2f} s after the shard was SERVING, "
            "with no action on the gateway",
        )
