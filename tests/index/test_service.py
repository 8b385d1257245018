"""Process-level tests of the index service over gRPC: guards, status codes, shards, metrics, restarts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from services.common.limits import LimitError
from services.index.errors import (
    InvalidArgumentError,
    PreconditionError,
    ShardUnavailableError,
    UnknownShardError,
)
from services.index.servicer import ShardSet, status_code_for
from tests.support import ROOT, ServiceProcess, metric_value

DIM = 16
MODEL = "svc-model"
IMAGE = types_pb2.MODALITY_IMAGE
TEXT = types_pb2.MODALITY_TEXT


def unit(seed: int, dim: int = DIM) -> list[float]:
    """A deterministic unit vector as a list."""
    x = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (x / np.linalg.norm(x)).tolist()


def proto_item(i: int, **overrides: object) -> index_pb2.IndexItem:
    """Item `it-i` with a vector seeded by i."""
    fields: dict[str, object] = {
        "id": f"it-{i}",
        "modality": IMAGE if i % 2 == 0 else TEXT,
        "vector": unit(i),
        "metadata": {"n": str(i), "parity": "even" if i % 2 == 0 else "odd"},
        "tags": [f"t{i % 3}"],
    }
    fields.update(overrides)
    return index_pb2.IndexItem(**fields)  # type: ignore[arg-type]


def code_of(call: object, request: object) -> tuple[grpc.StatusCode, str]:
    """The status code and details a failing call returns."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)  # type: ignore[operator]
    error = info.value
    return error.code(), error.details()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub]]:
    """One index process serving shards 0 and 2 with small limits, shared by the guard tests."""
    workdir = tmp_path_factory.mktemp("index-service")
    env = {
        "CROSSMODAL_INDEX_DATA_DIR": str(workdir / "data"),
        "CROSSMODAL_INDEX_SHARDS": "0,2",
        "CROSSMODAL_MAX_K": "100",
        "CROSSMODAL_MAX_BATCH": "50",
        "CROSSMODAL_MAX_METADATA_BYTES": "512",
    }
    proc = ServiceProcess("services.index", workdir, env).wait_ready()
    channel = proc.channel()
    stub = index_pb2_grpc.IndexServiceStub(channel)
    response = stub.UpsertVectors(
        index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=[proto_item(i) for i in range(40)]),
        timeout=30,
    )
    assert all(s.code == 0 for s in response.statuses)
    yield proc, stub
    channel.close()
    proc.terminate()
    proc.close()


def test_upsert_search_get_delete_round_trip(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
) -> None:
    _, stub = server
    hits = stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=unit(7), k=3, model_id=MODEL)).hits
    assert hits[0].id == "it-7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].modality == TEXT
    assert dict(hits[0].metadata) == {"n": "7", "parity": "odd"}
    assert list(hits[0].tags) == ["t1"]
    filtered = stub.SearchShard(
        index_pb2.SearchShardRequest(
            shard=0,
            vector=unit(7),
            k=5,
            modality=IMAGE,
            filter=types_pb2.Filter(clauses=[types_pb2.FilterClause(key="n", any_of=["4", "8", "9"])]),
        )
    )
    assert {h.id for h in filtered.hits} == {"it-4", "it-8"}
    got = stub.GetVectors(index_pb2.GetVectorsRequest(shard=0, ids=["it-3", "nope"], include_vectors=True))
    assert [i.id for i in got.items] == ["it-3"] and list(got.missing) == ["nope"]
    assert list(got.items[0].vector) == unit(3)
    version = stub.UpsertVectors(
        index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=[proto_item(100)])
    ).version
    deleted = stub.DeleteVectors(index_pb2.DeleteVectorsRequest(shard=0, ids=["it-100", "never"]))
    assert deleted.deleted == 1 and deleted.version == version + 1
    hits = stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=unit(100), k=50, exact=True)).hits
    assert "it-100" not in {h.id for h in hits}


def test_shards_are_independent_and_unknown_ones_are_not_found(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
) -> None:
    _, stub = server
    # Shard 2 is empty and takes another model and dimension.
    other = index_pb2.UpsertVectorsRequest(
        shard=2, model_id="other", items=[proto_item(1, vector=unit(1, 8)), proto_item(2, vector=unit(2, 8))]
    )
    assert all(s.code == 0 for s in stub.UpsertVectors(other).statuses)
    stats = {s.shard: s for s in stub.GetShardStats(index_pb2.GetShardStatsRequest()).shards}
    assert set(stats) == {0, 2}
    assert (stats[0].model_id, stats[0].dim, stats[0].dtype) == (MODEL, DIM, "f32")
    assert (stats[2].model_id, stats[2].dim, stats[2].count) == ("other", 8, 2)
    assert stats[0].count >= 40 and stats[0].memory_bytes > 0
    for call, request in [
        (stub.UpsertVectors, index_pb2.UpsertVectorsRequest(shard=1, model_id=MODEL, items=[proto_item(1)])),
        (stub.DeleteVectors, index_pb2.DeleteVectorsRequest(shard=1, ids=["a"])),
        (stub.GetVectors, index_pb2.GetVectorsRequest(shard=1, ids=["a"])),
        (stub.SearchShard, index_pb2.SearchShardRequest(shard=1, vector=unit(1), k=1)),
        (stub.CreateSnapshot, index_pb2.CreateSnapshotRequest(shard=7)),
    ]:
        code, details = code_of(call, request)
        assert code == grpc.StatusCode.NOT_FOUND and "serves 0,2" in details


def test_a_batch_of_searches_answers_each_as_searched_alone_with_its_own_status(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
) -> None:
    _, stub = server
    by_n = types_pb2.Filter(clauses=[types_pb2.FilterClause(key="n", any_of=["4", "8", "9"])])
    good = [
        index_pb2.SearchShardRequest(shard=0, vector=unit(7), k=3, model_id=MODEL),
        index_pb2.SearchShardRequest(shard=0, vector=unit(11), k=5, modality=IMAGE, filter=by_n),
        index_pb2.SearchShardRequest(shard=0, vector=unit(3), k=4, exact=True),
        index_pb2.SearchShardRequest(shard=0, vector=unit(5), k=2, include_vectors=True),
    ]
    bad = {
        1: (index_pb2.SearchShardRequest(shard=1, vector=unit(1), k=1), grpc.StatusCode.NOT_FOUND, "serves 0,2"),
        3: (
            index_pb2.SearchShardRequest(shard=0, vector=unit(1, 8), k=1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "8 values",
        ),
        5: (
            index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=1, model_id="other"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not 'other'",
        ),
    }
    searches = list(good)
    for position, (request, _, _) in sorted(bad.items()):
        searches.insert(position, request)
    reply = stub.SearchShardBatch(index_pb2.SearchShardBatchRequest(searches=searches), timeout=30)
    assert len(reply.results) == len(searches)
    answers = iter(good)
    for position, result in enumerate(reply.results):
        if position in bad:
            _, code, fragment = bad[position]
            assert result.status.code == code.value[0] and fragment in result.status.message, result.status
            continue
        alone = stub.SearchShard(next(answers), timeout=30)
        assert result.status.code == 0 and result.response == alone
    assert {h.id for h in reply.results[2].response.hits} == {"it-4", "it-8"}  # the filtered one, on a thread
    too_many = index_pb2.SearchShardBatchRequest(searches=[good[0]] * 51)
    code, details = code_of(stub.SearchShardBatch, too_many)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "50" in details


def test_another_model_is_a_failed_precondition(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
) -> None:
    _, stub = server
    code, details = code_of(
        stub.UpsertVectors,
        index_pb2.UpsertVectorsRequest(shard=0, model_id="clip-vit-b-32", items=[proto_item(1)]),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and MODEL in details
    code, _ = code_of(stub.SearchShard, index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=1, model_id="x"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_items_get_invalid_argument_each(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
) -> None:
    _, stub = server
    nan = unit(1)
    nan[2] = float("nan")
    inf = unit(1)
    inf[0] = float("-inf")
    bad = [
        proto_item(500, vector=nan),
        proto_item(501, vector=inf),
        proto_item(502, vector=[0.0] * DIM),
        proto_item(503, vector=unit(503, DIM + 3)),
        proto_item(504, vector=[]),
        proto_item(505, id=""),
        proto_item(506, id="i" * 257),
        proto_item(507, metadata={"k": "v" * 600}),
        proto_item(508, tags=[str(i) for i in range(65)]),
        proto_item(509, modality=types_pb2.MODALITY_UNSPECIFIED),
    ]
    response = stub.UpsertVectors(
        index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=[*bad, proto_item(510)])
    )
    codes = [s.code for s in response.statuses]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * len(bad) + [0]
    assert all(s.message for s in response.statuses[:-1])
    got = stub.GetVectors(index_pb2.GetVectorsRequest(shard=0, ids=[f"it-{i}" for i in range(500, 511)]))
    assert [i.id for i in got.items] == ["it-510"]


@pytest.mark.parametrize(
    ("method", "request_", "fragment"),
    [
        ("UpsertVectors", index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL), "no items given"),
        (
            "UpsertVectors",
            index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=[proto_item(i) for i in range(51)]),
            "51 items; the limit is 50 (CROSSMODAL_MAX_BATCH)",
        ),
        (
            "UpsertVectors",
            index_pb2.UpsertVectorsRequest(shard=0, items=[proto_item(1)]),
            "model_id is empty",
        ),
        ("DeleteVectors", index_pb2.DeleteVectorsRequest(shard=0), "no ids given"),
        ("DeleteVectors", index_pb2.DeleteVectorsRequest(shard=0, ids=["x"] * 51), "51 ids; the limit is 50"),
        ("DeleteVectors", index_pb2.DeleteVectorsRequest(shard=0, ids=[""]), "id is empty"),
        ("GetVectors", index_pb2.GetVectorsRequest(shard=0), "no ids given"),
        ("GetVectors", index_pb2.GetVectorsRequest(shard=0, ids=["x"] * 51), "51 ids; the limit is 50"),
        ("GetVectors", index_pb2.GetVectorsRequest(shard=0, ids=["g" * 300]), "longer than 256"),
        ("SearchShard", index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=0), "k must be at least 1"),
        (
            "SearchShard",
            index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=101),
            "k=101 is above the limit of 100 (CROSSMODAL_MAX_K)",
        ),
        ("SearchShard", index_pb2.SearchShardRequest(shard=0, vector=[float("nan")] * DIM, k=1), "NaN"),
        (
            "SearchShard",
            index_pb2.SearchShardRequest(shard=0, vector=[float("inf")] * DIM, k=1),
            "NaN or infinite",
        ),
        ("SearchShard", index_pb2.SearchShardRequest(shard=0, vector=[0.0] * DIM, k=1), "zero length"),
        ("SearchShard", index_pb2.SearchShardRequest(shard=0, vector=unit(1, 5), k=1), "has 5 values"),
        ("SearchShard", index_pb2.SearchShardRequest(shard=0, k=1), "empty"),
        ("SearchShard", index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=1, modality=5), "modality 5"),  # type: ignore[arg-type]
        (
            "SearchShard",
            index_pb2.SearchShardRequest(
                shard=0,
                vector=unit(1),
                k=1,
                filter=types_pb2.Filter(clauses=[types_pb2.FilterClause(key="n")]),
            ),
            "needs 1-64 values",
        ),
        (
            "SearchShard",
            index_pb2.SearchShardRequest(
                shard=0, vector=unit(1), k=1, filter=types_pb2.Filter(tags_all=["a"] * 3 + [""])
            ),
            "must not be empty",
        ),
    ],
)
def test_bad_requests_get_invalid_argument(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
    method: str,
    request_: object,
    fragment: str,
) -> None:
    _, stub = server
    code, details = code_of(getattr(stub, method), request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in details


def test_metrics_report_vectors_latency_and_snapshot_age(
    server: tuple[ServiceProcess, index_pb2_grpc.IndexServiceStub],
) -> None:
    proc, stub = server
    assert metric_value(proc.metrics(), "crossmodal_index_snapshot_age_seconds", shard="0") == -1.0
    written = stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=0))
    stats = {s.shard: s for s in stub.GetShardStats(index_pb2.GetShardStatsRequest()).shards}
    assert written.version == stats[0].version == stats[0].snapshot_version
    assert 0 <= stats[0].snapshot_age_seconds < 600
    stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=unit(3), k=2))
    text = proc.metrics()
    assert metric_value(text, "crossmodal_index_vectors", shard="0") == stats[0].count
    assert metric_value(text, "crossmodal_index_search_seconds_count", shard="0") >= 1
    assert metric_value(text, "crossmodal_index_snapshot_age_seconds", shard="0") >= 0
    assert metric_value(text, "crossmodal_index_memory_bytes", shard="0") == stats[0].memory_bytes


def test_a_damaged_snapshot_is_rebuilt_from_the_store_after_restart(tmp_path: Path) -> None:
    env = {"CROSSMODAL_INDEX_DATA_DIR": str(tmp_path / "data")}
    proc = ServiceProcess("services.index", tmp_path, env).wait_ready()
    with proc.channel() as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        for start in range(0, 300, 50):
            batch = [proto_item(i) for i in range(start, start + 50)]
            stub.UpsertVectors(index_pb2.UpsertVectorsRequest(shard=0, model_id=MODEL, items=batch))
        stub.CreateSnapshot(index_pb2.CreateSnapshotRequest(shard=0))
        stub.DeleteVectors(index_pb2.DeleteVectorsRequest(shard=0, ids=[f"it-{i}" for i in range(0, 300, 3)]))
    assert proc.terminate() == 0  # graceful: writes a final snapshot covering the deletes
    expected = {f"it-{i}" for i in range(300) if i % 3}

    for damage in ("truncate", "flip"):
        (snapshot,) = list((tmp_path / "data" / "shard-0").glob("index-*.usearch"))
        data = bytearray(snapshot.read_bytes())
        if damage == "truncate":
            snapshot.write_bytes(data[: len(data) // 2])
        else:
            for offset in range(len(data) - 4096, len(data) - 4000):
                data[offset] ^= 0x5A
            snapshot.write_bytes(data)
        proc = ServiceProcess("services.index", tmp_path, env).wait_ready()
        assert metric_value(proc.metrics(), "crossmodal_index_rebuilds_total", shard="0", reason="damaged") == 1
        with proc.channel() as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)
            everything = stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=unit(1), k=1000, exact=True))
            assert {h.id for h in everything.hits} == expected
            for i in (1, 2, 149, 298):
                top = stub.SearchShard(index_pb2.SearchShardRequest(shard=0, vector=unit(i), k=1)).hits[0]
                assert top.id == f"it-{i}" and dict(top.metadata)["n"] == str(i)
            got = stub.GetVectors(index_pb2.GetVectorsRequest(shard=0, ids=["it-5"], include_vectors=True))
            assert list(got.items[0].vector) == unit(5)
        assert proc.terminate() == 0  # writes a fresh, sound snapshot for the next round to damage
        proc.close()


def test_a_bad_setting_stops_the_process_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.index"],
        cwd=ROOT,
        env={
            "PYTHONPATH": str(ROOT),
            "CROSSMODAL_INDEX_DTYPE": "f64",
            "CROSSMODAL_INDEX_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CROSSMODAL_INDEX_DTYPE" in result.stderr


def test_each_domain_error_has_one_status_code() -> None:
    shards = ShardSet((0, 1))
    with pytest.raises(UnknownShardError) as unknown:
        shards.get(5)
    with pytest.raises(ShardUnavailableError) as loading:
        shards.get(1)
    assert status_code_for(unknown.value) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(loading.value) == grpc.StatusCode.UNAVAILABLE
    assert status_code_for(InvalidArgumentError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(LimitError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(PreconditionError("x")) == grpc.StatusCode.FAILED_PRECONDITION
