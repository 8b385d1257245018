"""Index replicas following the write log on a real nats-server: convergence, restarts, bootstrap, reads.

Every test publishes what a gateway would (`tests/index/logtools.py`) to its own stream of one
nats-server shared by the module, runs real index processes with CROSSMODAL_LOG_URL, and compares what
they hold with what the log holds.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.logserver import LogServer
from crossmodal.v1 import index_pb2, types_pb2
from services.common import writelog
from services.index.servicer import LOG_MODE_WRITE_REFUSAL
from tests.index.logtools import (
    MODEL,
    LogWriter,
    Replica,
    ids_of_shard,
    item,
    replica_env,
    rpc_error,
    vector,
)
from tests.support import ServiceProcess, metric_value, wait_for


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogServer]:
    """One nats-server with JetStream for the module; each test uses a stream of its own."""
    server = LogServer(tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)  # a test stopped it and failed before resuming it
        server.stop()


@pytest.fixture(scope="module")
def nats_url(nats_server: LogServer) -> str:
    """The module's nats-server URL."""
    return nats_server.url


_streams = iter(range(1, 1000))


@pytest.fixture
def writer(nats_url: str) -> Iterator[LogWriter]:
    """A publisher on a fresh stream (created) of the module's server."""
    log = LogWriter(nats_url, f"T{next(_streams)}")
    log.create_stream()
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Replicas a test starts; whatever still runs at the end is killed."""
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.channel.close()
        replica.proc.close()


def start(replicas: list[Replica], workdir: Path, env: dict[str, str]) -> Replica:
    """Start a replica, remembered for teardown."""
    replica = Replica.start(workdir, env)
    replicas.append(replica)
    return replica


def read_store(data_dir: Path, query: str, shard: int = 0) -> dict[object, int]:
    """Rows (key, value) of a query on a shard's store file, read while the replica may be writing it."""
    path = data_dir / f"shard-{shard}" / "store.sqlite3"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return dict(conn.execute(query).fetchall())
    except sqlite3.OperationalError:
        return {}  # the schema is not created yet
    finally:
        conn.close()


def stored_positions(data_dir: Path, shard: int = 0) -> dict[int, int]:
    """The positions a shard's store recorded."""
    rows = read_store(data_dir, "SELECT partition, sequence FROM log_positions", shard)
    return {int(str(p)): s for p, s in rows.items()}


def stored_versions(data_dir: Path, shard: int = 0) -> dict[str, int]:
    """The store version that wrote each live id."""
    return {str(i): v for i, v in read_store(data_dir, "SELECT id, version FROM items", shard).items()}


def write_history(writer: LogWriter, ids: list[str], rng: random.Random, rounds: int) -> None:
    """Upserts, replacements and deletes over `ids`, `rounds` batches, reproducible from `rng`."""
    gens = dict.fromkeys(ids, 0)
    for _ in range(rounds):
        chosen = rng.sample(ids, max(1, len(ids) // 5))
        if rng.random() < 0.7:
            for i in chosen:
                gens[i] += 1
            writer.upsert(item(i, gens[i]) for i in chosen)
        else:
            writer.delete(chosen)


def test_two_replicas_converge_with_replacements_and_deletes(
    tmp_path: Path, writer: LogWriter, replicas: list[Replica]
) -> None:
    ids = ids_of_shard(0, 120, "c") + ids_of_shard(1, 40, "c")
    first = start(replicas, tmp_path / "a", replica_env(tmp_path / "a" / "data", writer))
    rng = random.Random(14)
    writer.upsert(item(i, 0) for i in ids)
    second = start(replicas, tmp_path / "b", replica_env(tmp_path / "b" / "data", writer))
    write_history(writer, ids, rng, 12)
    targets = writer.targets(0)
    assert all(targets.values())
    expected = writer.expected_of(0)
    assert 0 < len(expected) < len(writer.ids_of(0)), "the history must leave live and deleted ids"
    for replica in (first, second):
        replica.wait_applied(targets)
        assert replica.content(writer.ids_of(0)) == expected
        # Ids of the other shard's partitions never reach shard 0.
        assert replica.content(writer.ids_of(1)) == {}
        # The lag is updated just after a batch's position moves: wait for it, briefly.
        stats = wait_for(lambda r=replica: (s := r.stats()).log_lag == 0 and s, 10, "lag 0")  # type: ignore[misc]
        assert stats.count == len(expected)
        assert {p.partition: p.sequence for p in stats.applied} == targets
        assert stats.log_lag_seconds == 0.0
        text = replica.proc.metrics()
        assert metric_value(text, "crossmodal_index_log_lag_messages", shard="0") == 0
        assert metric_value(text, "crossmodal_index_log_applied_total", shard="0", op="upsert") > 0
        assert metric_value(text, "crossmodal_index_log_applied_total", shard="0", op="delete") > 0
        for partition, sequence in targets.items():
            assert (
                metric_value(text, "crossmodal_index_log_applied_sequence", shard="0", partition=str(partition))
                == sequence
            )
    # The same items, down to the exhaustive search order.
    probe = vector("probe", 0)
    request = index_pb2.SearchShardRequest(shard=0, vector=probe, k=1000, exact=True, include_vectors=True)
    # A protobuf map has no order: compare each hit's metadata sorted.
    hits = [
        [(h.id, tuple(sorted(h.metadata.items()))) for h in r.stub.SearchShard(request, timeout=30).hits]
        for r in replicas
    ]
    assert hits[0] == hits[1]
    assert {h[0] for h in hits[0]} == set(expected)


def test_stopped_replica_catches_up_after_sigterm_and_kill_9(
    tmp_path: Path, writer: LogWriter, replicas: list[Replica]
) -> None:
    ids = ids_of_shard(0, 100, "r")
    env = replica_env(tmp_path / "data", writer)
    rng = random.Random(7)
    writer.upsert(item(i, 0) for i in ids)
    replica = start(replicas, tmp_path / "run-0", env)
    replica.wait_applied(writer.targets(0))
    for round_, kill in enumerate((False, True), start=1):
        before = replica.versions(ids)
        version_before = replica.stats().version
        assert replica.close(kill=kill) == (-9 if kill else 0)
        untouched = set(ids)
        # Missed while down: replacements, deletes, new ids.
        changed = rng.sample(ids, 30)
        writer.upsert(item(i, round_) for i in changed[:20])
        writer.delete(changed[20:])
        fresh = ids_of_shard(0, 100 + 10 * round_, "r")[-10:]
        writer.upsert(item(i, round_) for i in fresh)
        ids.extend(fresh)
        untouched -= set(changed)
        replica = start(replicas, tmp_path / f"run-{round_}", env)
        # SERVING means caught up: the content is complete without waiting.
        assert replica.applied() == writer.targets(0)
        assert replica.content(ids) == writer.expected_of(0)
        # Nothing applied twice: untouched items keep the store version that wrote them, and the store moved
        # on by the missed batches only (one version per applied batch, at most one per partition and publish).
        after = replica.versions(ids)
        assert {i: after[i] for i in untouched if i in after} == {i: before[i] for i in untouched if i in before}
        assert all(after[i] > version_before for i in fresh)
    # A restart with nothing new applies nothing.
    version = replica.stats().version
    versions = replica.versions(ids)
    replica.close()
    replica = start(replicas, tmp_path / "run-last", env)
    assert replica.stats().version == version
    assert replica.versions(ids) == versions


def test_empty_replica_bootstraps_the_whole_content(tmp_path: Path, writer: LogWriter, replicas: list[Replica]) -> None:
    ids = ids_of_shard(0, 3000, "b")
    writer.upsert(item(i, 0) for i in ids)
    writer.upsert(item(i, 1) for i in ids[::3])
    writer.delete(ids[1::7])
    started = time.monotonic()
    replica = start(replicas, tmp_path, replica_env(tmp_path / "data", writer))
    seconds = time.monotonic() - started
    assert replica.applied() == writer.targets(0)
    expected = writer.expected_of(0)
    assert replica.content(ids) == expected
    assert replica.stats().count == len(expected)
    # The log keeps one message per id (its latest write): len(ids) messages to apply.
    print(f"\nbootstrap: {len(ids)} messages, {len(expected)} live items, SERVING after {seconds:.2f} s")


@pytest.fixture
def replica(tmp_path: Path, writer: LogWriter, replicas: list[Replica]) -> Replica:
    """One replica of shard 0 on the test's stream, already holding a few items."""
    writer.upsert(item(i, 0) for i in ids_of_shard(0, 10, "base"))
    return start(replicas, tmp_path, replica_env(tmp_path / "data", writer))


def test_after_waits_for_the_write_then_answers(writer: LogWriter, replica: Replica) -> None:
    ids = ids_of_shard(0, 2, "after")
    partition = writer.layout.placement.partition_of(ids[0])
    # The sequence the next write of that partition gets (nothing else publishes to its stream).
    wanted = writer.last.get(partition, 0) + 1
    request = index_pb2.GetVectorsRequest(
        shard=0, ids=[ids[0]], after=[types_pb2.LogPosition(partition=partition, sequence=wanted)]
    )
    answers: list[index_pb2.GetVectorsResponse] = []
    reader = threading.Thread(target=lambda: answers.append(replica.stub.GetVectors(request, timeout=20)))
    reader.start()
    time.sleep(0.5)
    assert not answers, "the read answered before its write was applied"
    assert writer.upsert([item(ids[0], 0)]) == [wanted]
    reader.join(20)
    assert [it.id for it in answers[0].items] == [ids[0]]
    # A search waits alike; positions of partitions shard 0 does not own are ignored.
    other = next(p for p in range(8) if p % 2 == 1)
    search = index_pb2.SearchShardRequest(
        shard=0,
        vector=vector(ids[1], 0),
        k=1,
        after=[
            types_pb2.LogPosition(partition=writer.layout.placement.partition_of(ids[1]), sequence=wanted + 1),
            types_pb2.LogPosition(partition=other, sequence=10**9),
        ],
    )
    found: list[index_pb2.SearchShardResponse] = []
    searcher = threading.Thread(target=lambda: found.append(replica.stub.SearchShard(search, timeout=20)))
    searcher.start()
    time.sleep(0.3)
    assert not found
    writer.upsert([item(ids[1], 0)])
    searcher.join(20)
    assert found[0].hits[0].id == ids[1]


def test_after_times_out_with_unavailable_naming_the_position(writer: LogWriter, replica: Replica) -> None:
    partition = writer.owned(0)[0]
    applied = replica.applied()[partition]
    wanted = applied + 1000
    request = index_pb2.GetVectorsRequest(
        shard=0, ids=["x"], after=[types_pb2.LogPosition(partition=partition, sequence=wanted)]
    )
    started = time.monotonic()
    error = rpc_error(replica.stub.GetVectors, request, timeout=1.0)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert f"partition {partition}" in error.details()
    assert f"up to sequence {applied}" in error.details() and f"not yet {wanted}" in error.details()
    assert 0.7 < time.monotonic() - started < 1.0
    search = index_pb2.SearchShardRequest(
        shard=0, vector=vector("q", 0), k=1, after=[types_pb2.LogPosition(partition=partition, sequence=wanted)]
    )
    assert rpc_error(replica.stub.SearchShard, search, timeout=0.5).code() == grpc.StatusCode.UNAVAILABLE


def test_direct_writes_are_refused_in_log_mode(replica: Replica) -> None:
    upsert = index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=[item("direct", 0)])
    error = rpc_error(replica.stub.UpsertVectors, upsert)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == LOG_MODE_WRITE_REFUSAL
    error = rpc_error(replica.stub.DeleteVectors, index_pb2.DeleteVectorsRequest(shard=0, ids=["base-0"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert replica.content(["direct"]) == {}


def test_poison_messages_are_skipped_and_counted(writer: LogWriter, replica: Replica) -> None:
    good = ids_of_shard(0, 6, "good")
    # Each poison message on a subject of its own: a later write of the same subject would replace it.
    bad = ids_of_shard(0, 6, "bad")
    payload = writelog.encode_upsert(item(bad[0], 0), MODEL)
    broken = item(bad[2], 0)
    del broken.vector[3:]
    writer.upsert([item(good[0], 0)])
    writer.publish(
        [
            (writer.layout.subject(bad[3]), b"\xff\xff\xff"),
            (writer.layout.subject(bad[4]), index_pb2.LogEntry(model_id=MODEL).SerializeToString()),
            (writer.layout.subject(bad[5]), payload),
            (writer.layout.subject(bad[1]), writelog.encode_upsert(item(bad[1], 0), "another-model")),
            (writer.layout.subject(bad[2]), writelog.encode_upsert(broken, MODEL)),
        ]
    )
    writer.upsert(item(i, 0) for i in good[1:])
    replica.wait_applied(writer.targets(0))
    assert set(replica.content(good + bad)) == set(good)
    text = replica.proc.metrics()

    def skipped(reason: str) -> float:
        return metric_value(text, "crossmodal_index_log_skipped_total", shard="0", reason=reason)

    assert skipped("undecodable") == 2
    assert skipped("misrouted") == 1
    assert skipped("model") == 1
    assert skipped("invalid") == 1
    assert replica.applied() == writer.targets(0)


def test_replica_waits_for_the_stream_then_serves(tmp_path: Path, nats_url: str, replicas: list[Replica]) -> None:
    log = LogWriter(nats_url, "LATE")
    try:
        proc = ServiceProcess("services.index", tmp_path, replica_env(tmp_path / "data", log))
        try:
            time.sleep(3.0)
            assert proc.proc.poll() is None, proc.log()
            assert not proc.ready_file.exists(), "SERVING before the stream exists"
            assert "waiting for the write log streams" in proc.log()
            log.create_stream()
            ids = ids_of_shard(0, 50, "late")
            log.upsert(item(i, 0) for i in ids)
            proc.wait_ready(60)
            replica = Replica(proc)
            replicas.append(replica)
            replica.wait_applied(log.targets(0))
            assert replica.content(ids) == log.expected_of(0)
            with proc.channel() as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
        except BaseException:
            proc.close()
            raise
    finally:
        log.close()


def test_kill_9_during_a_large_apply_loses_and_repeats_nothing(
    tmp_path: Path, writer: LogWriter, replicas: list[Replica]
) -> None:
    ids = ids_of_shard(0, 6000, "k")
    writer.upsert(item(i, 0) for i in ids)
    writer.delete(ids[::11])
    targets = writer.targets(0)
    total = sum(targets.values())
    data = tmp_path / "data"
    env = replica_env(data, writer)
    kills = 0
    committed: dict[str, int] = {}
    for round_ in range(3):
        proc = ServiceProcess("services.index", tmp_path / f"run-{round_}", env)
        try:
            # Kill once the store recorded some positions but not all: in the middle of the catch-up.
            floor = sum(stored_positions(data).values())

            def midway(proc: ServiceProcess = proc, floor: int = floor) -> bool:
                assert proc.proc.poll() is None, proc.log()
                done = sum(stored_positions(data).values())
                return floor < done < total

            wait_for(midway, 60, "the catch-up to be midway", interval=0.01)
            proc.kill()
            kills += 1
        finally:
            proc.close()
        positions = stored_positions(data)
        assert all(positions.get(p, 0) <= s for p, s in targets.items())
        committed.update(stored_versions(data))
    replica = start(replicas, tmp_path / "final", env)
    assert kills == 3
    assert replica.applied() == targets
    assert stored_positions(data) == {p: s for p, s in targets.items() if s}
    expected = writer.expected_of(0)
    assert replica.content(ids) == expected
    assert replica.stats().count == len(expected)
    # Nothing committed before a kill was applied again after it: each id keeps the version that wrote it.
    final = replica.versions(ids)
    assert committed and {i: final[i] for i in committed if i in final} == {
        i: v for i, v in committed.items() if i in final
    }


def test_a_stalled_log_is_retried_and_followed_again(
    nats_server: LogServer, writer: LogWriter, replica: Replica
) -> None:
    assert nats_server.proc is not None
    ids = ids_of_shard(0, 20, "stall")
    # Frozen longer than a fetch and an API call wait: fetches and consumer look-ups time out meanwhile.
    nats_server.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(8.0)
        assert replica.stats().count == 10, "reads go on while the log is stalled"
    finally:
        nats_server.proc.send_signal(signal.SIGCONT)
    writer.upsert(item(i, 0) for i in ids)
    replica.wait_applied(writer.targets(0), timeout=30)
    assert replica.content(ids) == {i: c for i, c in writer.expected_of(0).items() if i in ids}
    assert replica.proc.proc.poll() is None
    assert "following the write log failed" in replica.proc.log()
