"""Replicas that never diverge: every write goes through the replicated log, on real processes.

Each test runs a real local cluster whose writes go through a real nats-server with JetStream, kills
replicas (SIGTERM and kill -9), NATS nodes and the gateway, and checks what issue 14 asks: every write
acknowledged while a replica is down, restarted replicas catching up to identical content, nothing lost
or resurrected.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path

import grpc
import nats.js.errors
import numpy as np
import pytest

from crossmodal.client import Ack, Client, IngestJournal, Item, Position
from crossmodal.cluster import ClusterSpec, LocalCluster
from services.common import writelog
from tests.faults.helpers import assert_stored_once, stored, text_items, wait_whole
from tests.reliability import record
from tests.support import replica_items, wait_for

# The most a test reads back from one replica with one exact search (the limit of CROSSMODAL_MAX_K).
MAX_K = 100_000


def log_spec(data_dir: Path, bundle: Path, *, shards: int = 2, replicas: int = 2, log: str = "single") -> ClusterSpec:
    """A cluster on free loopback ports whose writes go through the log; K may list a whole shard."""
    return ClusterSpec.on_free_ports(
        data_dir, shards=shards, replicas=replicas, bundle=bundle, log=log, env={"CROSSMODAL_MAX_K": str(MAX_K)}
    )


def replica_content(cluster: LocalCluster, name: str, shard: int) -> dict[str, tuple[bytes, dict[str, str], list[str]]]:
    """Everything one replica holds for `shard`, read from it directly: id -> (vector bytes, metadata, tags)."""
    return {
        item.id: (np.asarray(item.vector, np.float32).tobytes(), dict(item.metadata), list(item.tags))
        for item in replica_items(cluster.by_name(name).address, shard, MAX_K)
    }


def wait_identical(cluster: LocalCluster, shard: int, names: list[str], timeout: float) -> float:
    """Poll until every named replica of `shard` holds the same content; the seconds it took."""
    started = time.monotonic()

    def same() -> bool:
        contents = [replica_content(cluster, name, shard) for name in names]
        return all(c == contents[0] for c in contents[1:])

    wait_for(same, timeout, f"replicas {names} of shard {shard} to hold identical content", interval=0.2)
    return time.monotonic() - started


async def absent_from_log(url: str, positions: dict[str, Position]) -> list[str]:
    """The ids whose acknowledged position does not hold their write in the log."""
    nc = await writelog.connect(writelog.LogConfig(url=url, timeout_seconds=10), "test")
    js = nc.jetstream(timeout=10)
    layout = await writelog.read_layout(js, "CROSSMODAL")
    absent = []
    for item_id, position in positions.items():
        try:
            message = await js.get_msg(layout.stream_of(position.partition), position.sequence)
            if writelog.decode(message.subject or "", position.sequence, message.data or b"").item.id != item_id:
                absent.append(item_id)
        except nats.js.errors.NotFoundError:
            absent.append(item_id)
    await nc.close()
    return absent


def found_by_search(client: Client, cluster: LocalCluster, items: list[Item]) -> list[str]:
    """The ids among `items` that an exact vector search for their own stored vector does not find."""
    vectors: dict[str, bytes] = {}
    for name in (p.name for p in cluster.processes if p.module == "services.index"):
        if cluster.by_name(name).proc.poll() is None:  # type: ignore[union-attr]
            shard = int(name.split("-")[1])
            vectors.update({i: v for i, (v, _m, _t) in replica_content(cluster, name, shard).items()})
    lost = []
    for item in items:
        if item.id not in vectors:
            lost.append(item.id)
            continue
        vector = np.frombuffer(vectors[item.id], np.float32).tolist()
        hits = client.search(vector=vector, k=5, exact=True).hits
        if item.id not in [h.id for h in hits]:
            lost.append(item.id)
    return lost


def test_a_replica_that_was_down_catches_up_and_writes_never_stop(tmp_path: Path, bundle_dir: Path) -> None:
    # The scenario of issue 14: before the log, 108 of these 200 items were lost for good.
    with LocalCluster(log_spec(tmp_path / "c", bundle_dir)) as cluster, Client(cluster.address) as client:
        cluster.kill("index-0-0")
        items = text_items("down", 200)
        acks = list(client.ingest(items))
        assert all(a.ok for a in acks), [(a.id, a.code.name, a.message) for a in acks if not a.ok][:3]
        assert all(a.position is not None for a in acks)
        cluster.restart("index-0-0")
        caught_up = wait_identical(cluster, 0, ["index-0-0", "index-0-1"], timeout=10)
        assert replica_content(cluster, "index-0-0", 0)  # not identical by both being empty
        cluster.kill("index-0-1")
        found, missing = client.get([i.id for i in items])
        assert missing == [] and len(found) == 200
        assert found_by_search(client, cluster, items) == []
        record(
            "faults",
            "replica down during writes (log)",
            "2 shards x 2 replicas with the log; index-0-0 killed, 200 texts ingested, it restarted; "
            "then index-0-1 killed",
            f"200 of 200 acknowledged OK while it was down; identical content on both replicas {caught_up:.1f} s "
            "after the restart; with the other replica killed, 0 of 200 missing by Get and by Search",
        )


@pytest.mark.timeout(900)
def test_rolling_restart_during_a_continuous_ingest(tmp_path: Path, bundle_dir: Path) -> None:
    items = text_items("roll", 20_000)
    replicas = [f"index-{s}-{r}" for s in range(2) for r in range(2)]
    with LocalCluster(log_spec(tmp_path / "c", bundle_dir)) as cluster, Client(cluster.address) as client:
        acks: list[Ack] = []
        done = threading.Event()
        failed_searches: list[str] = []
        hung_stops: list[str] = []
        searches = 0

        def ingest() -> None:
            try:
                acks.extend(client.ingest(items, window=512))
            finally:
                done.set()

        writer = threading.Thread(target=ingest)
        writer.start()
        with Client(cluster.address, read_your_writes=False) as reader:
            for number, name in enumerate(replicas):
                process = cluster.by_name(name)
                if number % 2 == 0:
                    process.proc.terminate()  # type: ignore[union-attr]
                    try:
                        process.proc.wait(60)  # type: ignore[union-attr]
                    except subprocess.TimeoutExpired:
                        # Seen once on CI under this load: the replica logged "stopped" (drained, final
                        # snapshot written) but the process did not exit. Not what this test is about
                        # (kill -9 is as safe), so it is killed and counted; the note reports it.
                        hung_stops.append(name)
                        cluster.kill(name)
                else:
                    cluster.kill(name)
                for _ in range(5):
                    try:
                        reader.search("red circle note", k=5, timeout=10)
                    except grpc.RpcError as exc:
                        failed_searches.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
                    searches += 1
                cluster.restart(name)
        writer.join(600)
        assert done.is_set()
        assert len(acks) == len(items)
        not_ok = [a for a in acks if not a.ok]
        assert not not_ok, f"{len(not_ok)} not OK, e.g. {not_ok[0].code.name}: {not_ok[0].message}"
        assert failed_searches == []
        assert_stored_once(client, items)
        for shard in range(2):
            wait_identical(cluster, shard, [f"index-{shard}-0", f"index-{shard}-1"], timeout=60)
        record(
            "faults",
            "rolling restart (log)",
            "2 shards x 2 replicas with the log; 20,000 texts streamed while each replica in turn was stopped "
            "(SIGTERM, kill -9 alternately) and restarted",
            f"20,000 of 20,000 acknowledged OK; none missing; {searches} searches during the restarts, 0 failed; "
            f"replicas identical afterwards (did not exit within 60 s of SIGTERM: {hung_stops or 'none'})",
        )


def test_a_whole_shard_down_still_takes_writes_and_deletes(tmp_path: Path, bundle_dir: Path) -> None:
    with LocalCluster(log_spec(tmp_path / "c", bundle_dir)) as cluster, Client(cluster.address) as client:
        early = text_items("early", 100)
        assert all(a.ok for a in client.ingest(early))
        cluster.kill("index-1-0")
        cluster.kill("index-1-1")
        late = text_items("late", 100)
        assert all(a.ok for a in client.ingest(late))
        gone = [i.id for i in early[:50]]
        assert client.delete(gone) == 50
        for name in ("index-1-0", "index-1-1"):
            cluster.restart(name)
        wait_whole(cluster.address)
        remaining = early[50:] + late
        found, missing = client.get([i.id for i in remaining])  # the client's own writes: read after them
        assert missing == [] and len(found) == len(remaining)
        assert client.get(gone) == ([], gone)
        assert found_by_search(client, cluster, remaining) == []
        record(
            "faults",
            "whole shard down (log)",
            "both replicas of shard 1 killed; 100 texts ingested and 50 earlier ones deleted meanwhile; both restarted",
            "every write acknowledged OK during the outage; all searchable once back; none of the 50 deletes undone",
        )


def test_an_empty_replica_fills_itself_from_the_log(tmp_path: Path, bundle_dir: Path) -> None:
    with LocalCluster(log_spec(tmp_path / "c", bundle_dir, shards=1)) as cluster, Client(cluster.address) as client:
        items = text_items("fill", 2000)
        assert all(a.ok for a in client.ingest(items, window=512))
        assert client.delete([i.id for i in items[:100]]) == 100
        cluster.kill("index-0-1")
        fresh = cluster.by_name("index-0-1")
        data_dir = Path(fresh.env["CROSSMODAL_INDEX_DATA_DIR"])
        for path in sorted(data_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        started = time.monotonic()
        cluster.restart("index-0-1")
        seconds = wait_identical(cluster, 0, ["index-0-0", "index-0-1"], timeout=60) + (time.monotonic() - started)
        assert len(replica_content(cluster, "index-0-1", 0)) == 1900
        record(
            "faults",
            "empty replica joins (log)",
            "a replica's data directory emptied (2,000 texts ingested, 100 deleted), then started again",
            f"it replayed the log to identical content (1,900 items, no deleted one) {seconds:.1f} s after start",
        )


@pytest.mark.timeout(900)
def test_kill_9_of_a_nats_node_and_of_the_gateway_lose_no_acknowledged_item(tmp_path: Path, bundle_dir: Path) -> None:
    spec = log_spec(tmp_path / "c", bundle_dir, replicas=2, log="cluster")
    with LocalCluster(spec) as cluster:
        # A NATS node killed mid-stream: JetStream keeps every acknowledged write on the other two.
        first = text_items("nats", 3000)
        node = cluster.log.nodes[1]  # type: ignore[union-attr]
        with Client(cluster.address) as client:
            acks = []
            for ack in client.ingest(first):
                acks.append(ack)
                if len(acks) == 1000:
                    node.kill()
        # Acks come back as their batches finish, not in the order the items were sent: match them by id.
        by_id = {item.id: item for item in first}
        acknowledged = [by_id[a.id] for a in acks if a.ok]
        positions = {a.id: a.position for a in acks if a.ok and a.position is not None}
        assert len(acknowledged) >= 1000
        cluster.log.restart(node)  # type: ignore[union-attr]
        # The gateway killed mid-stream: the client resumes from its journal, as before the log.
        second = text_items("gw", 3000)
        journal_path = tmp_path / "load.journal"
        for attempt in range(10):
            with Client(cluster.address) as client, IngestJournal(journal_path) as journal:
                try:
                    for n, _ack in enumerate(client.ingest_resumable(second, journal)):
                        if attempt == 0 and n == 1000:
                            cluster.kill("gateway")
                except grpc.RpcError:
                    pass
                if len(journal.acknowledged) == len(second):
                    break
            if attempt == 0:
                cluster.restart("gateway")
            wait_whole(cluster.address)
        else:
            pytest.fail("the resumed ingest never completed")
        # Every acknowledged write is in the log at the position its ack named...
        assert asyncio.run(absent_from_log(cluster.log.url, positions)) == []  # type: ignore[union-attr]
        # ...and the replicas, which lost their consumers with the node, apply all of it (eventually consistent:
        # a new client carries no positions to read after, so poll).
        everything = [i.id for i in acknowledged + second]
        with Client(cluster.address) as client:
            wait_for(lambda: stored(client, everything)[1] == [], 120, "the replicas to apply every acknowledged write")
            assert_stored_once(client, acknowledged)
            assert_stored_once(client, second)
        record(
            "faults",
            "kill -9 of a NATS node and of the gateway (log)",
            "3-node JetStream, stream replicas 3: one node killed at 1,000 of 3,000 acks; then the gateway "
            "killed at 1,000 of another 3,000 and the client resumed from its journal",
            f"{len(acknowledged)} of 3,000 acknowledged OK across the node's death, none lost; the resume after "
            "the gateway's death sent the rest; all stored once",
        )
