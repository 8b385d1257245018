"""The replicated write log on NATS JetStream, as the gateway (which publishes) and the index replicas (which
apply it) both see it: layout, subjects, messages, connection and errors.

Layout (docs/architecture.md, "The write log"): one stream, by default `CROSSMODAL`, whose subjects are
`<prefix>.<partition>.<key>` with `key` a 128-bit hash of the item id. The stream keeps one message per
subject (`max_msgs_per_subject=1`), so it holds the latest write of every item, like a key-value bucket:
an upsert carries the whole item, a delete is a tombstone on the same subject. A replica that starts
empty replays the partitions its shard owns and ends with exactly the current content; one that restarts
resumes after the last sequence it recorded per partition. The partition and shard counts are fixed when
the stream is created and are written into its description, so every process reads the same ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re

import grpc
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from crossmodal.v1 import index_pb2
from services.common.config import setting
from services.common.placement import Placement

OP_HEADER = "Crossmodal-Op"
MODEL_HEADER = "Crossmodal-Model"
UPSERT = "upsert"
DELETE = "delete"
_DESCRIPTION = re.compile(r"crossmodal write log; partitions=(\d+); shards=(\d+)")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Where the write log is; an empty URL means direct mode (the gateway writes each replica itself)."""

    url: str = setting(
        "LOG_URL",
        "",
        "NATS server(s) of the write log, e.g. `nats://nats-0:4222,nats://nats-1:4222`; empty: no log (direct "
        "writes, one replica per shard only). Gateway and index replicas must name the same.",
    )
    stream: str = setting("LOG_STREAM", "CROSSMODAL", "JetStream stream of the write log (letters, digits, - and _).")
    timeout_seconds: float = setting(
        "LOG_TIMEOUT_SECONDS",
        5.0,
        "How long a publish waits for the log's acknowledgement (stored on a quorum of the stream's "
        "replicas) before the item is answered UNAVAILABLE.",
        min=0.1,
        max=600,
    )

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.stream):
            raise ValueError(f"CROSSMODAL_LOG_STREAM: {self.stream!r} is not a valid stream name")

    @property
    def enabled(self) -> bool:
        """Whether writes go through the log."""
        return bool(self.url.strip())

    @property
    def servers(self) -> list[str]:
        """The server URLs."""
        return [u.strip() for u in self.url.split(",") if u.strip()]


@dataclasses.dataclass(frozen=True)
class LogLayout:
    """The stream, and the fixed partition and shard counts of the cluster it serves."""

    stream: str
    placement: Placement

    @property
    def prefix(self) -> str:
        """The first token of every subject."""
        return self.stream.lower()

    def subject(self, item_id: str) -> str:
        """The subject that holds an item's latest write."""
        key = hashlib.blake2b(item_id.encode("utf-8"), digest_size=16).hexdigest()
        return f"{self.prefix}.{self.placement.partition_of(item_id)}.{key}"

    def partition_filter(self, partition: int) -> str:
        """The subjects of one partition."""
        return f"{self.prefix}.{partition}.*"

    @staticmethod
    def partition_of_subject(subject: str) -> int:
        """The partition a subject belongs to."""
        return int(subject.split(".")[1])

    def description(self) -> str:
        """The stream description that records the layout."""
        p = self.placement
        return f"crossmodal write log; partitions={p.partitions}; shards={p.shards}"


class LogUnavailableError(Exception):
    """The log could not take or give a write; `code` is the status to report (retryable)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def log_error(error: BaseException, what: str) -> LogUnavailableError:
    """The retryable status for a failed log call: RESOURCE_EXHAUSTED when the log is full, else UNAVAILABLE."""
    if isinstance(error, nats.js.errors.APIError):
        text = f"{error.description or ''} (err_code {error.err_code})"
        # JetStream refuses a write over the stream's or the account's limits: the log is full.
        if error.err_code in (10047, 10027, 10028, 10077, 10078) or "maximum" in (error.description or ""):
            return LogUnavailableError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: the write log is full: {text}; retry later"
            )
        return LogUnavailableError(grpc.StatusCode.UNAVAILABLE, f"{what}: the write log refused it: {text}")
    if isinstance(error, nats.errors.TimeoutError | asyncio.TimeoutError):
        return LogUnavailableError(
            grpc.StatusCode.UNAVAILABLE, f"{what}: the write log did not acknowledge in time; retry"
        )
    return LogUnavailableError(grpc.StatusCode.UNAVAILABLE, f"{what}: the write log is unreachable ({error!r}); retry")


def encode_upsert(item: index_pb2.IndexItem, model_id: str) -> tuple[bytes, dict[str, str]]:
    """The payload and headers of an upsert."""
    return item.SerializeToString(), {OP_HEADER: UPSERT, MODEL_HEADER: model_id}


def encode_delete(item_id: str) -> tuple[bytes, dict[str, str]]:
    """The payload and headers of a delete (a tombstone on the item's subject)."""
    return index_pb2.IndexItem(id=item_id).SerializeToString(), {OP_HEADER: DELETE}


@dataclasses.dataclass(frozen=True)
class LogWrite:
    """One write read back from the log."""

    sequence: int
    partition: int
    op: str
    item: index_pb2.IndexItem
    model_id: str


def decode(subject: str, sequence: int, data: bytes, headers: dict[str, str] | None) -> LogWrite:
    """A log message as a write; raises ValueError for a message no gateway wrote."""
    headers = headers or {}
    op = headers.get(OP_HEADER, "")
    if op not in (UPSERT, DELETE):
        raise ValueError(f"log message {sequence} on {subject} has no {OP_HEADER} header")
    item = index_pb2.IndexItem.FromString(data)
    return LogWrite(sequence, LogLayout.partition_of_subject(subject), op, item, headers.get(MODEL_HEADER, ""))


async def connect(config: LogConfig, name: str) -> NATS:
    """A connection to the log that reconnects for ever (the log is a dependency, not an option)."""
    return await nats.connect(
        servers=config.servers,
        name=name,
        connect_timeout=min(config.timeout_seconds, 5.0),
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
    )


async def ensure_stream(
    js: JetStreamContext, stream: str, placement: Placement, replicas: int, max_bytes: int
) -> LogLayout:
    """Create the log's stream for `placement`, or check that the existing one was made for it."""
    layout = LogLayout(stream, placement)
    try:
        existing = await read_layout(js, stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=stream,
                description=layout.description(),
                subjects=[f"{layout.prefix}.*.*"],
                max_msgs_per_subject=1,
                max_bytes=max_bytes,
                discard=DiscardPolicy.NEW,  # a full log refuses writes; it never drops stored items
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=120.0,
            )
        )
        return layout
    if existing.placement != placement:
        raise ValueError(
            f"the write log {stream} was created for {existing.placement.shards} shards and "
            f"{existing.placement.partitions} partitions, this gateway is configured for {placement.shards} shards "
            f"and {placement.partitions} partitions: they are fixed once data is stored"
        )
    return existing


async def read_layout(js: JetStreamContext, stream: str) -> LogLayout:
    """The layout recorded in an existing stream's description (NotFoundError when there is no stream)."""
    info = await js.stream_info(stream)
    found = _DESCRIPTION.fullmatch(info.config.description or "")
    if found is None:
        raise ValueError(f"stream {stream} is not a crossmodal write log (description {info.config.description!r})")
    return LogLayout(stream, Placement(shards=int(found.group(2)), partitions=int(found.group(1))))
