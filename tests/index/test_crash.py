"""Crash test: kill -9 the index process at random moments while writers stream upserts and deletes.

Each round starts the server on the same data directory, lets two writers stream batches of upserts
and deletes (and the odd CreateSnapshot) over gRPC, and kills the process with SIGKILL once a random
number of writes were acknowledged, so the kill lands in the middle of commits, graph updates,
background snapshots and compactions (the snapshot interval and compaction thresholds are tiny).
After each restart the test checks every id: an acknowledged write is present with its exact vector
and metadata, a deleted id is gone (from get and from search), no id appears twice in a search. The
one write per writer that was in flight at the kill may or may not have happened; whichever it was
becomes the new expectation.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import threading
from pathlib import Path

import grpc
import numpy as np

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from tests.support import ServiceProcess, metric_value, wait_for

ROUNDS = 12
WRITERS = 2
IDS_PER_WRITER = 40
DIM = 16
MODEL = "crash-model"


@functools.cache
def vector_of(item: str, gen: int) -> tuple[float, ...]:
    """The float32 vector of generation `gen` of `item`, as the floats a proto carries."""
    seed = int.from_bytes(f"{item}/{gen}".encode(), "little") % (2**63)
    x = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return tuple(float(v) for v in x)


def proto_of(item: str, gen: int) -> index_pb2.IndexItem:
    """Generation `gen` of `item`."""
    modality = types_pb2.MODALITY_IMAGE if gen % 2 else types_pb2.MODALITY_TEXT
    return index_pb2.IndexItem(
        id=item,
        modality=modality,
        vector=vector_of(item, gen),
        metadata={"gen": str(gen)},
        tags=[f"g{gen % 4}"],
    )


# What a writer knows of one id: the generation stored, or None when deleted (or never written).
State = int | None


@dataclasses.dataclass
class Writer:
    """One writer's ids, what was acknowledged, and the write in flight when the server died."""

    owner: int
    confirmed: dict[str, State]
    next_gen: dict[str, int]
    pending: dict[str, State] = dataclasses.field(default_factory=dict)
    acked: int = 0

    def run(self, stub: index_pb2_grpc.IndexServiceStub, rng: random.Random, stop: threading.Event) -> None:
        """Write until the server dies (the first failed call) or `stop` is set."""
        ids = list(self.confirmed)
        while not stop.is_set():
            roll = rng.random()
            chosen = rng.sample(ids, rng.randint(1, 5))
            try:
                if roll < 0.65:
                    gens = {item: self.next_gen[item] for item in chosen}
                    for item in chosen:
                        self.next_gen[item] += 1
                    self.pending = dict(gens)
                    response = stub.UpsertVectors(
                        index_pb2.UpsertVectorsRequest(
                            shard=0, model_id=MODEL, items=[proto_of(i, g) for i, g in gens.items()]
                        ),
                        timeout=30,
                    )
                    assert [s.code for s in response.statuses] == [0] * len(chosen)
                elif roll < 0.97:
                    self.pending = dict.fromkeys(chosen)
                    stub.DeleteVectors(index_pb2.DeleteVectorsRequest(shard=0, ids=chosen), timeout=30)
                else:
                    self.pending = {}
                    stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=0), timeout=30)
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), error
                return
            self.confirmed.update(self.pending)
            self.pending = {}
            self.acked += 1


def acked_at_least(writers: list[Writer], target: int) -> bool:
    """Whether the writers together have `target` acknowledged writes."""
    return sum(w.acked for w in writers) >= target


def reconcile(stub: index_pb2_grpc.IndexServiceStub, writers: list[Writer]) -> None:
    """Check the restarted server against what was acknowledged; adopt the outcome of in-flight writes."""
    all_ids = [item for w in writers for item in w.confirmed]
    got = stub.GetVectors(index_pb2.GetVectorsRequest(shard=0, ids=all_ids, include_vectors=True), timeout=60)
    stored = {it.id: it for it in got.items}
    assert len(stored) == len(got.items), "get returned an id twice"
    for writer in writers:
        for item, confirmed in writer.confirmed.items():
            actual = int(stored[item].metadata["gen"]) if item in stored else None
            allowed = {confirmed}
            if item in writer.pending:
                allowed.add(writer.pending[item])
            assert actual in allowed, f"{item}: stored generation {actual}, acknowledged {confirmed}"
            if actual is not None:
                assert tuple(stored[item].vector) == vector_of(item, actual), f"{item}: vector differs"
                assert list(stored[item].tags) == [f"g{actual % 4}"]
            writer.confirmed[item] = actual
        writer.pending = {}
    live = {item: gen for w in writers for item, gen in w.confirmed.items() if gen is not None}
    # An exhaustive search returns exactly the live ids, once each, with their current generation.
    probe = vector_of("probe", len(live))
    hits = stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=probe, k=1000, exact=True), timeout=60).hits
    assert len(hits) == len({h.id for h in hits}), "an id appears twice"
    assert {h.id: int(h.metadata["gen"]) for h in hits} == live
    # The graph agrees too: approximate searches return no deleted id, no duplicate, the right version.
    for item, gen in list(live.items())[:10]:
        approx = stub.SearchShard(
            index_pb2.SearchShardRequest(shard=0, vector=vector_of(item, gen), k=10), timeout=60
        ).hits
        assert len(approx) == len({h.id for h in approx})
        assert all(live.get(h.id) == int(h.metadata["gen"]) for h in approx)
        assert approx[0].id == item


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    env = {
        "CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "data"),
        "CROSSMODAL_INDEX_SNAPSHOT_INTERVAL_SECONDS": "0.1",
        "CROSSMODAL_INDEX_COMPACT_MIN_DELETED": "15",
        "CROSSMODAL_INDEX_COMPACT_RATIO": "0.1",
        "CROSSMODAL_INDEX_DIM": str(DIM),
    }
    rng = random.Random(20240611)
    writers = [
        Writer(
            owner,
            confirmed=dict.fromkeys((f"w{owner}-{j}" for j in range(IDS_PER_WRITER)), None),
            next_gen=dict.fromkeys((f"w{owner}-{j}" for j in range(IDS_PER_WRITER)), 1),
        )
        for owner in range(WRITERS)
    ]
    rebuilds = dict.fromkeys(("missing", "damaged", "inconsistent", "config_changed"), 0.0)
    snapshots = 0.0
    for round_ in range(ROUNDS):
        proc = ServiceProcess("services.index", tmp_path / f"round-{round_}", env).wait_ready()
        try:
            with proc.channel() as channel:
                stub = index_pb2_grpc.IndexServiceStub(channel)
                if round_:
                    reconcile(stub, writers)
                    text = proc.metrics()
                    for reason in rebuilds:
                        rebuilds[reason] += metric_value(
                            text, "crossmodal_index_rebuilds_total", shard="0", reason=reason
                        )
                stop = threading.Event()
                start_acks = sum(w.acked for w in writers)
                target = start_acks + rng.randint(5, 60)
                threads = [
                    threading.Thread(target=w.run, args=(stub, random.Random(rng.random()), stop)) for w in writers
                ]
                for thread in threads:
                    thread.start()
                wait_for(functools.partial(acked_at_least, writers, target), 60, "writes to be acknowledged")
                snapshots += metric_value(proc.metrics(), "crossmodal_index_snapshot_seconds_count", shard="0")
                proc.kill()
                stop.set()
                for thread in threads:
                    thread.join(60)
                    assert not thread.is_alive()
        finally:
            proc.close()

    proc = ServiceProcess("services.index", tmp_path / "final", env).wait_ready()
    try:
        with proc.channel() as channel:
            reconcile(index_pb2_grpc.IndexServiceStub(channel), writers)
    finally:
        proc.terminate()
        proc.close()
    # Snapshots were written while the kills happened, and every restart after the first snapshot loaded
    # one and replayed the store: a snapshot is never found damaged or out of step with the store.
    assert snapshots > 0
    assert sum(w.acked for w in writers) >= ROUNDS * 5
    assert rebuilds["damaged"] == rebuilds["inconsistent"] == rebuilds["config_changed"] == 0, rebuilds
