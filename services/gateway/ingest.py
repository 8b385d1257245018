"""The Ingest stream: check each item, batch items to the encoders, write each batch, acknowledge per item.

One `IngestPipeline` serves one stream. Items are read as they come and grouped into batches of up to
INGEST_BATCH (or whatever arrived within INGEST_MAX_WAIT_MS); up to INGEST_CONCURRENCY batches are
encoded and written at once, and while they are all busy the stream is not read (backpressure reaches the
client through gRPC flow control). A stream that sends nothing for INGEST_IDLE_SECONDS while no batch
of it is in flight is closed, so that idle clients cannot hold every ingest slot forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from crossmodal.transport import code_of
from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from services.gateway.backends import Backends, Encoded, EncoderPool
from services.gateway.config import GatewayConfig
from services.gateway.errors import GatewayError, status_of
from services.gateway.metrics import INGEST_ITEMS
from services.gateway.moments import AUDIO_DURATION_KEY
from services.gateway.validation import check_item
from services.gateway.writer import Writer


class IngestPipeline:
    """Turns one stream of IngestRequests into one acknowledgement per item."""

    def __init__(self, config: GatewayConfig, backends: Backends, writer: Writer) -> None:
        self.config = config
        self.backends = backends
        self.writer = writer
        self._acks: asyncio.Queue[gateway_pb2.IngestResponse | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(config.ingest_concurrency)
        self._batches: set[asyncio.Task[None]] = set()

    async def run(
        self, requests: AsyncIterator[gateway_pb2.IngestRequest]
    ) -> AsyncIterator[gateway_pb2.IngestResponse]:
        """Acknowledgements as their items are stored or refused; raises GatewayError if the stream idles."""
        reader = asyncio.ensure_future(self._read(requests))
        try:
            while (ack := await self._acks.get()) is not None:
                yield ack
            await reader
        finally:
            reader.cancel()

    async def _read(self, requests: AsyncIterator[gateway_pb2.IngestRequest]) -> None:
        loop = asyncio.get_running_loop()
        iterator = requests.__aiter__()
        max_wait = self.config.ingest_max_wait_ms / 1000
        idle_limit = self.config.ingest_idle_seconds
        batch: list[gateway_pb2.IngestRequest] = []
        next_item: asyncio.Task[gateway_pb2.IngestRequest] | None = None
        active = loop.time()  # when the stream last sent an item or had a batch finish
        try:
            while True:
                if next_item is None:
                    next_item = asyncio.ensure_future(iterator.__anext__())
                if batch:
                    timeout: float | None = max_wait
                elif self._batches:
                    timeout = None  # acks are due: the client may wait for them before it sends more
                else:
                    timeout = max(active + idle_limit - loop.time(), 0.0)
                done, _ = await asyncio.wait(
                    {next_item, *self._batches}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if next_item in done:
                    active = loop.time()
                    try:
                        item = next_item.result()
                    except StopAsyncIteration:
                        next_item = None
                        break
                    next_item = None
                    if self._accept(item):
                        batch.append(item)
                    if len(batch) < self.config.ingest_batch:
                        continue
                elif done:
                    active = loop.time()  # a batch finished: the idle clock starts again
                    continue
                elif not batch:
                    raise GatewayError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the stream sent no item for {idle_limit:g} s (CROSSMODAL_GATEWAY_INGEST_IDLE_SECONDS) "
                        "and was closed to free its ingest slot; open a new stream to send more",
                    )
                if batch:
                    await self._start(batch)
                    batch = []
            if batch:
                await self._start(batch)
            await asyncio.gather(*self._batches)
        finally:
            if next_item is not None:
                next_item.cancel()
            await self._acks.put(None)

    def _accept(self, item: gateway_pb2.IngestRequest) -> bool:
        """Check an item; a refused one is acknowledged at once with its reason."""
        try:
            check_item(item, self.config.limits)
            # FAILED_PRECONDITION for this item when the cluster has no tower for it.
            which = item.WhichOneof("content")
            if which == "audio":
                self.backends.audio_pool()
            elif which == "image":
                self.backends.image_pool()
        except Exception as exc:  # noqa: BLE001 - every failure gets its status from the one table
            code, message = status_of(exc)
            INGEST_ITEMS.labels(code.name).inc()
            self._acks.put_nowait(
                gateway_pb2.IngestResponse(id=item.id, status=types_pb2.ItemStatus(code=code.value[0], message=message))
            )
            return False
        return True

    async def _start(self, batch: list[gateway_pb2.IngestRequest]) -> None:
        await self._slots.acquire()  # backpressure: stop reading while every slot is busy
        task = asyncio.ensure_future(self._run_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batch(self, batch: list[gateway_pb2.IngestRequest]) -> None:
        try:
            for ack in await self._store(batch):
                INGEST_ITEMS.labels(code_of(ack.status.code).name).inc()
                await self._acks.put(ack)
        finally:
            self._slots.release()

    async def _store(self, batch: list[gateway_pb2.IngestRequest]) -> list[gateway_pb2.IngestResponse]:
        """Encode and write one batch; one acknowledgement per item, in batch order."""
        placement = self.backends.placement
        acks = [gateway_pb2.IngestResponse(id=item.id, shard=placement.shard_of(item.id)) for item in batch]
        encoded = await self._encode(batch)
        ready: list[int] = []
        for position, result in enumerate(encoded):
            if result.error is not None:
                _fail(acks[position], result.error.code, result.error.message)
            else:
                ready.append(position)

        async def write(shard: int, positions: list[int]) -> None:
            items = [_index_item(batch[p], encoded[p]) for p in positions]
            for p, outcome in zip(positions, await self.writer.upsert(shard, items), strict=True):
                if outcome.error is not None:
                    _fail(acks[p], outcome.error.code, outcome.error.message)
                    acks[p].failed_replicas.extend(outcome.failed_replicas)
                elif outcome.position is not None:
                    acks[p].position.CopyFrom(outcome.position)

        groups = placement.group([batch[p].id for p in ready])
        await asyncio.gather(*(write(s, [ready[i] for i in idx]) for s, idx in groups.items()))
        return acks

    async def _encode(self, batch: Sequence[gateway_pb2.IngestRequest]) -> list[Encoded]:
        """Each item's vector or error: texts, images and sounds go to their towers at the same time."""
        backends, timeout = self.backends, self.config.encode_timeout_ms / 1000
        encoded: list[Encoded] = [Encoded(None)] * len(batch)
        jobs: list[tuple[list[int], EncoderPool, list[encoder_pb2.EncodeItem]]] = []
        for kind, pool in (("text", backends.text), ("image", backends.image), ("audio", backends.audio)):
            positions = [i for i, item in enumerate(batch) if item.WhichOneof("content") == kind]
            if positions and pool is not None:
                jobs.append(
                    (positions, pool, [encoder_pb2.EncodeItem(**{kind: getattr(batch[i], kind)}) for i in positions])
                )
        results = await asyncio.gather(*(backends.encode(pool, items, timeout) for _, pool, items in jobs))
        for (positions, _, _), outcome in zip(jobs, results, strict=True):
            for position, one in zip(positions, outcome, strict=True):
                encoded[position] = one
        return encoded


_MODALITIES = {"text": types_pb2.MODALITY_TEXT, "image": types_pb2.MODALITY_IMAGE, "audio": types_pb2.MODALITY_AUDIO}


def _index_item(item: gateway_pb2.IngestRequest, encoded: Encoded) -> index_pb2.IndexItem:
    modality = _MODALITIES[item.WhichOneof("content") or "image"]
    stored = index_pb2.IndexItem(
        id=item.id, vector=encoded.vector, modality=modality, metadata=item.metadata, tags=item.tags
    )
    if encoded.seconds > 0:
        # A sound's length as its encoder decoded it: what a moment found in it ends at.
        stored.metadata[AUDIO_DURATION_KEY] = f"{encoded.seconds:.3f}"
    return stored


def _fail(ack: gateway_pb2.IngestResponse, code: grpc.StatusCode, message: str) -> None:
    ack.status.code = code.value[0]
    ack.status.message = message
