"""The Python SDK of crossmodal: a typed, blocking client of the public GatewayService."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

Target = Literal["any", "image", "text"]
_MODALITY = {"any": types_pb2.MODALITY_UNSPECIFIED, "image": types_pb2.MODALITY_IMAGE, "text": types_pb2.MODALITY_TEXT}
_NAMES = {types_pb2.MODALITY_IMAGE: "image", types_pb2.MODALITY_TEXT: "text", types_pb2.MODALITY_UNSPECIFIED: "any"}


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    modality: str
    metadata: dict[str, str]
    tags: list[str]


@dataclass(frozen=True)
class SearchResult:
    """The answer to a search: hits best first, and the shards that did not answer."""

    hits: list[Hit]
    partial_shards: list[int]
    model_id: str


@dataclass(frozen=True)
class Item:
    """An item to ingest: an id and either image bytes or a text, with metadata and tags."""

    id: str
    image: bytes | None = None
    text: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()

    @classmethod
    def from_image_file(
        cls, item_id: str, path: str | Path, metadata: Mapping[str, str] | None = None, tags: Sequence[str] = ()
    ) -> Item:
        """An image item read from a file."""
        return cls(item_id, image=Path(path).read_bytes(), metadata=dict(metadata or {}), tags=tuple(tags))


@dataclass(frozen=True)
class Ack:
    """The acknowledgement of one ingested item."""

    id: str
    ok: bool
    code: grpc.StatusCode
    message: str
    shard: int
    failed_replicas: list[str]

    @property
    def retryable(self) -> bool:
        """Whether sending the item again may succeed."""
        return self.code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )


@dataclass(frozen=True)
class ReplicaInfo:
    """The health of one replica."""

    address: str
    healthy: bool
    count: int
    error: str


@dataclass(frozen=True)
class Stats:
    """Collection statistics."""

    model_id: str
    dim: int
    total_count: int
    shards: dict[int, list[ReplicaInfo]]


def _code(number: int) -> grpc.StatusCode:
    return next((s for s in grpc.StatusCode if s.value[0] == number), grpc.StatusCode.UNKNOWN)


def build_filter(
    equals: Mapping[str, str | Sequence[str]] | None = None, tags_all: Sequence[str] = (), tags_any: Sequence[str] = ()
) -> types_pb2.Filter:
    """A metadata filter: key equals a value (or is one of several values), and tag conditions."""
    clauses = [
        types_pb2.FilterClause(key=k, any_of=[v] if isinstance(v, str) else list(v)) for k, v in (equals or {}).items()
    ]
    return types_pb2.Filter(clauses=clauses, tags_all=list(tags_all), tags_any=list(tags_any))


class Client:
    """A blocking client of a crossmodal gateway."""

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        tls: bool = False,
        timeout: float = 30.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def search(
        self,
        text: str | None = None,
        *,
        image: bytes | None = None,
        vector: Sequence[float] | None = None,
        like_id: str | None = None,
        k: int = 10,
        target: Target = "any",
        filter: types_pb2.Filter | None = None,
        require_complete: bool = False,
        exact: bool = False,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> SearchResult:
        """Search with exactly one of text, image, vector or like_id; raises grpc.RpcError on failure."""
        given = [x is not None for x in (text, image, vector, like_id)]
        if sum(given) != 1:
            raise ValueError("give exactly one of text, image, vector or like_id")
        request = gateway_pb2.SearchRequest(
            k=k, target=_MODALITY[target], require_complete=require_complete, exact=exact
        )
        if filter is not None:
            request.filter.CopyFrom(filter)
        if text is not None:
            request.text = text
        elif image is not None:
            request.image = image
        elif vector is not None:
            request.vector.values.extend(vector)
        else:
            request.like_id = like_id or ""
        metadata = self._metadata + ((("x-request-id", request_id),) if request_id else ())
        reply = self._stub.Search(request, timeout=timeout or self.timeout, metadata=metadata)
        return SearchResult(
            hits=[
                Hit(r.id, r.score, _NAMES.get(r.modality, "any"), dict(r.metadata), list(r.tags)) for r in reply.results
            ],
            partial_shards=list(reply.partial_shards),
            model_id=reply.model_id,
        )

    def ingest(self, items: Iterable[Item], *, window: int = 256, timeout: float | None = None) -> Iterator[Ack]:
        """Stream items in and yield one Ack per item as they come back.

        At most `window` items are in flight (sent but not acknowledged), so a large or endless
        iterable is read only as fast as the cluster stores it.
        """
        slots = threading.Semaphore(window)
        errors: queue.Queue[BaseException] = queue.Queue()

        def requests() -> Iterator[gateway_pb2.IngestRequest]:
            try:
                for item in items:
                    slots.acquire()
                    request = gateway_pb2.IngestRequest(id=item.id, metadata=dict(item.metadata), tags=list(item.tags))
                    if item.image is not None:
                        request.image = item.image
                    elif item.text is not None:
                        request.text = item.text
                    yield request
            except BaseException as exc:  # surfaced to the caller after the stream ends
                errors.put(exc)

        stream = self._stub.Ingest(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for reply in stream:
                slots.release()
                yield Ack(
                    reply.id,
                    reply.status.code == 0,
                    _code(reply.status.code),
                    reply.status.message,
                    reply.shard,
                    list(reply.failed_replicas),
                )
        finally:
            stream.cancel()
        if not errors.empty():
            raise errors.get()

    def delete(self, ids: Sequence[str], timeout: float | None = None) -> int:
        """Delete ids; returns how many existed."""
        reply = self._stub.Delete(
            gateway_pb2.DeleteRequest(ids=list(ids)), timeout=timeout or self.timeout, metadata=self._metadata
        )
        return int(reply.deleted)

    def get(self, ids: Sequence[str], timeout: float | None = None) -> tuple[list[Hit], list[str]]:
        """Fetch items by id: (found items with score 0, missing ids)."""
        reply = self._stub.Get(
            gateway_pb2.GetRequest(ids=list(ids)), timeout=timeout or self.timeout, metadata=self._metadata
        )
        found = [Hit(i.id, 0.0, _NAMES.get(i.modality, "any"), dict(i.metadata), list(i.tags)) for i in reply.items]
        return found, list(reply.missing)

    def stats(self, timeout: float | None = None) -> Stats:
        """Collection statistics with per-replica health."""
        reply = self._stub.GetStats(
            gateway_pb2.GetStatsRequest(), timeout=timeout or self.timeout, metadata=self._metadata
        )
        return Stats(
            reply.model_id,
            reply.dim,
            reply.total_count,
            {s.shard: [ReplicaInfo(r.address, r.healthy, r.count, r.error) for r in s.replicas] for s in reply.shards},
        )
