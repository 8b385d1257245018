"""The replicated write log on NATS JetStream, as the gateway (which publishes) and the index replicas (which
apply it) both see it: layout, subjects, messages, connection and errors.

Messages carry no headers: a `LogEntry` payload says what the write is. (nats-server 2.9 leaves headers
out when it checks a write against a stream's byte limit with discard=new, then drops the oldest message
to make room for the headers: a full log would lose stored items.)

Layout (docs/architecture.md, "The write log"): one stream per partition, `<base>_<partition>` (base
`CROSSMODAL` by default), whose subjects are `<base lower>.<partition>.<key>` with `key` a 128-bit hash of
the item id. Each stream keeps one message per subject (`max_msgs_per_subject=1`), so it holds the latest
write of every item of its partition, like a key-value bucket: an upsert carries the whole item, a delete
is a tombstone on the same subject. A replica that starts empty replays the partitions its shard owns and
ends with exactly the current content; one that restarts resumes after the last sequence it recorded per
partition. A stream per partition (not one stream with a subject per partition) because a consumer
filtered to one partition of a shared stream scans the whole stream: measured on nats-server 2.9.10, 2,700
messages/s against 40,000 for a whole stream, and 3 s against 27 ms to create 64 consumers. The partition
count is fixed when the streams are created and written into their descriptions, with the shard count
of the first partition map; which shard owns a partition is the partition map's to say
(`services/common/partitionmap.py`), and it changes when the cluster is resharded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
from collections.abc import Awaitable, Callable

import grpc
import nats
import nats.errors
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from crossmodal.v1 import index_pb2
from services.common.config import ConfigError, setting
from services.common.placement import Placement

UPSERT = "upsert"
DELETE = "delete"
log = structlog.get_logger("writelog")
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
        "How long a call to the log may take: a publish waiting for its acknowledgement (stored on a quorum "
        "of the stream's replicas; then the item is answered UNAVAILABLE), a connect, a stream or consumer "
        "lookup.",
        min=0.1,
        max=600,
    )

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.stream):
            raise ConfigError(f"CROSSMODAL_LOG_STREAM: {self.stream!r} is not a valid stream name")

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
    """The stream, its fixed partition count, and the shard count it was created for (the first map's)."""

    stream: str
    placement: Placement

    @property
    def prefix(self) -> str:
        """The first token of every subject."""
        return self.stream.lower()

    def stream_of(self, partition: int) -> str:
        """The stream that holds one partition."""
        return f"{self.stream}_{partition}"

    def subject(self, item_id: str) -> str:
        """The subject that holds an item's latest write."""
        key = hashlib.blake2b(item_id.encode("utf-8"), digest_size=16).hexdigest()
        return f"{self.prefix}.{self.placement.partition_of(item_id)}.{key}"

    def partition_filter(self, partition: int) -> str:
        """The subjects of one partition (all of its stream's)."""
        return f"{self.prefix}.{partition}.*"

    @staticmethod
    def partition_of_subject(subject: str) -> int:
        """The partition a subject belongs to."""
        return int(subject.split(".")[1])

    def description(self) -> str:
        """The stream description that records the layout (the same on every partition's stream)."""
        p = self.placement
        return f"crossmodal write log; partitions={p.partitions}; shards={p.shards}"


def log_status(error: BaseException, what: str) -> tuple[grpc.StatusCode, str]:
    """The retryable status for a failed log call: RESOURCE_EXHAUSTED when the log is full, else UNAVAILABLE."""
    if isinstance(error, nats.js.errors.APIError):
        text = f"{error.description or ''} (err_code {error.err_code})"
        # JetStream refuses a write over the stream's or the account's limits: the log is full.
        if error.err_code in (10047, 10027, 10028, 10077, 10078) or "maximum" in (error.description or ""):
            return grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: the write log is full: {text}; retry later"
        return grpc.StatusCode.UNAVAILABLE, f"{what}: the write log refused it: {text}"
    if isinstance(error, nats.errors.TimeoutError | asyncio.TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"{what}: the write log did not acknowledge in time; retry"
    return grpc.StatusCode.UNAVAILABLE, f"{what}: the write log is unreachable ({error!r}); retry"


def encode_upsert(item: index_pb2.IndexItem, model_id: str) -> bytes:
    """The payload of an upsert."""
    return index_pb2.LogEntry(item=item, model_id=model_id).SerializeToString()


def encode_delete(item_id: str) -> bytes:
    """The payload of a delete (a tombstone on the item's subject)."""
    return index_pb2.LogEntry(item=index_pb2.IndexItem(id=item_id), delete=True).SerializeToString()


@dataclasses.dataclass(frozen=True)
class LogWrite:
    """One write read back from the log."""

    sequence: int
    partition: int
    op: str
    item: index_pb2.IndexItem
    model_id: str


def decode(subject: str, sequence: int, data: bytes) -> LogWrite:
    """A log message as a write; raises ValueError for a message no gateway wrote."""
    try:
        entry = index_pb2.LogEntry.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"log message {sequence} on {subject} does not parse: {exc}") from None
    if not entry.item.id:
        raise ValueError(f"log message {sequence} on {subject} names no item")
    op = DELETE if entry.delete else UPSERT
    return LogWrite(sequence, LogLayout.partition_of_subject(subject), op, entry.item, entry.model_id)


async def connect(config: LogConfig, name: str) -> NATS:
    """A connection to the log that reconnects for ever once made; the first connect fails within the timeout."""
    # nats-py retries a first connect to an unreachable server without end when reconnects are unlimited,
    # so the first attempt is bounded here and the caller decides whether to try again.
    return await asyncio.wait_for(
        nats.connect(
            servers=config.servers,
            name=name,
            connect_timeout=min(config.timeout_seconds, 5.0),
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            error_cb=_connection_errors(name),
            disconnected_cb=_say(name, "disconnected from the write log"),
            reconnected_cb=_say(name, "reconnected to the write log"),
        ),
        timeout=config.timeout_seconds + 5.0,
    )


def _connection_errors(name: str) -> Callable[[Exception], Awaitable[None]]:
    """An error callback that logs one line per kind of error at most every 10 s (nats-py's default prints a
    traceback at every reconnect attempt, twice a second while the log is down)."""
    last: dict[str, float] = {}

    async def callback(error: Exception) -> None:
        kind = type(error).__name__
        now = time.monotonic()
        if now - last.get(kind, -1e9) >= 10.0:
            last[kind] = now
            log.warning("write log connection error", client=name, error=str(error) or kind)

    return callback


def _say(name: str, event: str) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        log.info(event, client=name)

    return callback


async def ensure_stream(
    js: JetStreamContext, stream: str, placement: Placement, replicas: int, max_bytes: int
) -> LogLayout:
    """Create the log's streams for `placement`, or check that the existing ones have its partition count."""
    # An existing log keeps the description it was created with: its shard count is the first partition
    # map's. From then on the partition map (services/common/partitionmap.py) says which shard owns which.
    try:
        layout = await read_layout(js, stream)
    except nats.js.errors.NotFoundError:
        layout = LogLayout(stream, placement)
    if layout.placement.partitions != placement.partitions:
        raise ValueError(
            f"the write log {stream} was created with {layout.placement.partitions} partitions, this gateway is "
            f"configured for {placement.partitions} (CROSSMODAL_GATEWAY_LOG_PARTITIONS): the partition count is "
            "fixed once the log exists"
        )
    assert placement.partitions is not None
    # Partition 0's stream is made last: its existence is what says the log is complete (read_layout).
    for partition in [*range(1, placement.partitions), 0]:
        try:
            await js.stream_info(layout.stream_of(partition))
            continue
        except nats.js.errors.NotFoundError:
            pass
        await js.add_stream(
            StreamConfig(
                name=layout.stream_of(partition),
                description=layout.description(),
                subjects=[layout.partition_filter(partition)],
                max_msgs_per_subject=1,
                # Each partition's share of the log's limit; a full one refuses writes, never drops stored items.
                max_bytes=max_bytes if max_bytes < 0 else max(max_bytes // placement.partitions, 1),
                discard=DiscardPolicy.NEW,
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=120.0,
            )
        )
    return layout


async def read_layout(js: JetStreamContext, stream: str) -> LogLayout:
    """The layout recorded in the log's streams (NotFoundError until all of them exist)."""
    info = await js.stream_info(f"{stream}_0")
    found = _DESCRIPTION.fullmatch(info.config.description or "")
    if found is None:
        raise ValueError(f"stream {stream}_0 is not a crossmodal write log (description {info.config.description!r})")
    return LogLayout(stream, Placement(shards=int(found.group(2)), partitions=int(found.group(1))))
