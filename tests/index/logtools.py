"""Helpers of the write-log tests: a publisher with its own event loop, deterministic items, replicas and checks.

The publisher writes exactly what a gateway would (`writelog.encode_upsert` / `encode_delete` on
`LogLayout.subject`, in the partition's stream), keeps the expected content of every id and the last
acknowledged sequence of every partition, so a test can compare a replica with the log without a gateway.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from crossmodal.v1 import index_pb2, index_pb2_grpc, types_pb2
from services.common import writelog
from services.common.placement import Placement
from services.common.writelog import LogConfig, LogLayout
from tests.support import ServiceProcess, wait_for

T = TypeVar("T")

DIM = 16
MODEL = "log-model"
PLACEMENT = Placement(shards=2, partitions=8)
# Publishes in flight at once; ids within one flight are distinct, so per-subject order is kept.
_FLIGHT = 256

# What a replica holds of one id: modality, metadata, tags, vector.
Content = tuple[int, tuple[tuple[str, str], ...], tuple[str, ...], tuple[float, ...]]


def vector(item_id: str, gen: int) -> list[float]:
    """The float32 vector of generation `gen` of an id, reproducible."""
    seed = int.from_bytes(f"{item_id}/{gen}".encode(), "little") % (2**63)
    x = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return [float(v) for v in x]


def item(item_id: str, gen: int) -> index_pb2.IndexItem:
    """Generation `gen` of an id, with metadata and tags that change with it."""
    return index_pb2.IndexItem(
        id=item_id,
        modality=types_pb2.MODALITY_IMAGE if gen % 2 else types_pb2.MODALITY_TEXT,
        vector=vector(item_id, gen),
        metadata={"gen": str(gen), "id": item_id},
        tags=[f"g{gen % 3}", "all"],
    )


def content_of(it: index_pb2.IndexItem) -> Content:
    """What a replica must hold for `it` (vectors compared as float32)."""
    vec = tuple(float(v) for v in np.asarray(it.vector, dtype=np.float32))
    return int(it.modality), tuple(sorted(it.metadata.items())), tuple(it.tags), vec


class LogWriter:
    """Publishes to a write-log stream from synchronous tests (its own event loop on a thread)."""

    def __init__(self, url: str, stream: str, placement: Placement = PLACEMENT) -> None:
        self.layout = LogLayout(stream, placement)
        self.config = LogConfig(url=url, stream=stream)
        # Expected content by id (None: deleted), and the last acknowledged sequence per partition.
        self.expected: dict[str, Content | None] = {}
        self.last: dict[int, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="log-writer", daemon=True)
        self._thread.start()
        self._nc = self._call(writelog.connect(self.config, "test-writer"))
        self._js = self._nc.jetstream(timeout=30)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    def create_stream(self) -> None:
        """Create the stream as the gateway does."""
        self._call(writelog.ensure_stream(self._js, self.layout.stream, self.layout.placement, 1, -1))

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Publish (subject, payload) in order; the sequences the log acknowledged (each in its partition)."""
        return self._call(self._publish(messages))

    async def _publish(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        sequences: list[int] = []
        flight: list[tuple[str, bytes]] = []
        subjects: set[str] = set()

        def stream(subject: str) -> str:
            return self.layout.stream_of(LogLayout.partition_of_subject(subject))

        async def send() -> None:
            acks = await asyncio.gather(*(self._js.publish(s, p, stream=stream(s)) for s, p in flight))
            for (subject, _), ack in zip(flight, acks, strict=True):
                partition = LogLayout.partition_of_subject(subject)
                self.last[partition] = max(self.last.get(partition, 0), ack.seq)
                sequences.append(ack.seq)
            flight.clear()
            subjects.clear()

        for message in messages:
            if message[0] in subjects or len(flight) >= _FLIGHT:
                await send()
            flight.append(message)
            subjects.add(message[0])
        if flight:
            await send()
        return sequences

    def upsert(self, items: Iterable[index_pb2.IndexItem], model: str = MODEL) -> list[int]:
        """Publish upserts and expect them."""
        messages = []
        for it in items:
            messages.append((self.layout.subject(it.id), writelog.encode_upsert(it, model)))
            self.expected[it.id] = content_of(it)
        return self.publish(messages)

    def delete(self, ids: Iterable[str]) -> list[int]:
        """Publish deletes and expect the ids gone."""
        messages = []
        for item_id in ids:
            messages.append((self.layout.subject(item_id), writelog.encode_delete(item_id)))
            self.expected[item_id] = None
        return self.publish(messages)

    def owned(self, shard: int) -> list[int]:
        """The partitions a shard owns."""
        return self.layout.placement.partitions_of(shard)

    def expected_of(self, shard: int) -> dict[str, Content]:
        """The live content the log holds for `shard`."""
        return {i: c for i, c in self.expected.items() if c is not None and self.layout.placement.shard_of(i) == shard}

    def ids_of(self, shard: int) -> list[str]:
        """Every id ever written to `shard` (live or deleted)."""
        return [i for i in self.expected if self.layout.placement.shard_of(i) == shard]

    def targets(self, shard: int) -> dict[int, int]:
        """The last sequence of each partition of `shard` (0 when none was written)."""
        return {p: self.last.get(p, 0) for p in self.owned(shard)}

    def close(self) -> None:
        """Close the connection and stop the loop."""
        self._call(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def ids_of_shard(shard: int, count: int, prefix: str) -> list[str]:
    """The first `count` ids `prefix-<n>` that the placement puts on `shard`."""
    out: list[str] = []
    n = 0
    while len(out) < count:
        candidate = f"{prefix}-{n}"
        if PLACEMENT.shard_of(candidate) == shard:
            out.append(candidate)
        n += 1
    return out


def replica_env(data_dir: Path, writer: LogWriter, shards: str = "0", **extra: str) -> dict[str, str]:
    """The environment of an index replica following `writer`'s stream."""
    return {
        "CROSSMODAL_INDEX_DATA_DIR": str(data_dir),
        "CROSSMODAL_INDEX_SHARDS": shards,
        "CROSSMODAL_INDEX_THREADS": "1",
        "CROSSMODAL_INDEX_WORKERS": "2",
        "CROSSMODAL_LOG_URL": writer.config.url,
        "CROSSMODAL_LOG_STREAM": writer.layout.stream,
        **extra,
    }


class Replica:
    """A running index replica and a stub to it."""

    def __init__(self, proc: ServiceProcess) -> None:
        self.proc = proc
        self.channel = proc.channel()
        self.stub = index_pb2_grpc.IndexServiceStub(self.channel)

    @classmethod
    def start(cls, workdir: Path, env: Mapping[str, str], timeout: float = 90.0) -> Replica:
        """Start a replica and wait until it is SERVING (caught up with the log)."""
        proc = ServiceProcess("services.index", workdir, env)
        try:
            proc.wait_ready(timeout)
        except BaseException:
            proc.close()
            raise
        return cls(proc)

    def stats(self, shard: int = 0) -> index_pb2.ShardStats:
        """The stats of one served shard."""
        response = self.stub.GetShardStats(index_pb2.GetShardStatsRequest(), timeout=30)
        return next(s for s in response.shards if s.shard == shard)

    def applied(self, shard: int = 0) -> dict[int, int]:
        """The applied position of each partition the shard owns."""
        return {p.partition: p.sequence for p in self.stats(shard).applied}

    def wait_applied(self, targets: Mapping[int, int], shard: int = 0, timeout: float = 60.0) -> None:
        """Poll until the shard applied `targets` (partition -> sequence)."""

        def done() -> bool:
            applied = self.applied(shard)
            return all(applied.get(p, 0) >= s for p, s in targets.items())

        wait_for(done, timeout, f"shard {shard} to apply {dict(targets)}", interval=0.05)

    def content(self, ids: Sequence[str], shard: int = 0) -> dict[str, Content]:
        """What the shard holds of `ids`."""
        out: dict[str, Content] = {}
        for chunk in _chunks(ids, 500):
            response = self.stub.GetVectors(
                index_pb2.GetVectorsRequest(shard=shard, ids=chunk, include_vectors=True), timeout=60
            )
            for it in response.items:
                assert it.id not in out, f"{it.id} returned twice"
                out[it.id] = content_of(it)
        return out

    def versions(self, ids: Sequence[str], shard: int = 0) -> dict[str, int]:
        """The store version that wrote each stored id (changes when an item is applied again)."""
        out: dict[str, int] = {}
        for chunk in _chunks(ids, 500):
            response = self.stub.GetVectors(index_pb2.GetVectorsRequest(shard=shard, ids=chunk), timeout=60)
            out.update({it.id: it.version for it in response.items})
        return out

    def close(self, kill: bool = False) -> int:
        """Stop the replica (SIGTERM, or kill -9) and return its exit status."""
        self.channel.close()
        try:
            return self.proc.kill() if kill else self.proc.terminate()
        finally:
            self.proc.close()


def _chunks(values: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def rpc_error(call: Any, request: Any, timeout: float = 30.0) -> grpc.RpcError:
    """The error a call that must fail raises."""
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")
