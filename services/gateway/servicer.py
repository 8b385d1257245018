"""The public GatewayService: validates requests, encodes queries, fans out to shards and merges."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from crossmodal.v1 import encoder_pb2, gateway_pb2, gateway_pb2_grpc, index_pb2, types_pb2
from services.gateway.backends import BackendError, EncoderPool, Shard, describe_error, status_of
from services.gateway.config import GatewayConfig
from services.gateway.metrics import INGEST_ITEMS, PARTIAL_RESPONSES, SHARD_SEARCH_SECONDS
from services.gateway.routing import group_by_shard, merge_top_k, shard_of

log = structlog.get_logger("gateway")

MAX_ID_BYTES = 256
MAX_TAGS = 64
# Time kept back from the caller's deadline to merge and answer after the shards replied.
_DEADLINE_MARGIN = 0.02
OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class RequestError(Exception):
    """A request the gateway refuses; mapped to a gRPC status in one place."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_id(item_id: str, what: str = "id") -> None:
    """Refuse empty or over-long ids."""
    if not item_id:
        raise RequestError(INVALID, f"{what} is empty: give every item an id of 1-{MAX_ID_BYTES} bytes")
    if len(item_id.encode("utf-8")) > MAX_ID_BYTES:
        raise RequestError(INVALID, f"{what} {item_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes")


@dataclass
class _Encoded:
    vector: list[float] | None
    code: int
    message: str


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Implements crossmodal.v1.GatewayService over encoder pools and replicated shards."""

    text: EncoderPool
    image: EncoderPool
    shards: list[Shard]

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.model_id = ""
        self.dim = 0

    def attach(self, text: EncoderPool, image: EncoderPool, shards: Sequence[Shard], model_id: str, dim: int) -> None:
        """Give the servicer its backends and the model they serve, once the service has started."""
        self.text, self.image, self.shards = text, image, list(shards)
        self.model_id, self.dim = model_id, dim

    # --- helpers -----------------------------------------------------------------------------

    def _check_text(self, text: str, what: str) -> None:
        if not text.strip():
            raise RequestError(INVALID, f"{what} is empty")
        if len(text) > self.config.max_text_chars:
            raise RequestError(
                INVALID,
                f"{what} has {len(text)} characters; the limit is "
                f"{self.config.max_text_chars} (CROSSMODAL_GATEWAY_MAX_TEXT_CHARS)",
            )

    def _check_image(self, data: bytes, what: str) -> None:
        if not data:
            raise RequestError(INVALID, f"{what} is empty")
        if len(data) > self.config.max_image_bytes:
            raise RequestError(
                INVALID,
                f"{what} has {len(data)} bytes; the limit is "
                f"{self.config.max_image_bytes} (CROSSMODAL_GATEWAY_MAX_IMAGE_BYTES)",
            )

    def _check_metadata(self, metadata: dict[str, str], tags: Sequence[str]) -> None:
        if len(tags) > MAX_TAGS:
            raise RequestError(INVALID, f"{len(tags)} tags; the limit is {MAX_TAGS}")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items()) + sum(len(t.encode()) for t in tags)
        if size > self.config.max_metadata_bytes:
            raise RequestError(
                INVALID,
                f"metadata and tags take {size} bytes; the limit is "
                f"{self.config.max_metadata_bytes} (CROSSMODAL_GATEWAY_MAX_METADATA_BYTES)",
            )

    def _check_vector(self, values: Sequence[float]) -> list[float]:
        if len(values) != self.dim:
            raise RequestError(
                INVALID,
                f"the query vector has {len(values)} values; the model {self.model_id} has dimension {self.dim}",
            )
        if not all(math.isfinite(v) for v in values):
            raise RequestError(INVALID, "the query vector contains NaN or infinite values")
        if not any(values):
            raise RequestError(INVALID, "the query vector is all zeros")
        return list(values)

    async def _encode(self, pool: EncoderPool, items: list[encoder_pb2.EncodeItem]) -> list[_Encoded]:
        timeout = self.config.encode_timeout_ms / 1000
        try:
            response = await pool.encode(items, timeout)
        except (grpc.aio.AioRpcError, BackendError) as exc:
            code = status_of(exc)
            message = exc.message if isinstance(exc, BackendError) else describe_error(exc)
            return [_Encoded(None, code.value[0], f"{pool.modality} encoder failed: {message}")] * len(items)
        if response.model_id != self.model_id:
            return [
                _Encoded(
                    None,
                    grpc.StatusCode.FAILED_PRECONDITION.value[0],
                    f"{pool.modality} encoder serves model {response.model_id}, the collection uses {self.model_id}",
                )
            ] * len(items)
        return [
            _Encoded(list(r.vector) if r.status.code == OK else None, r.status.code, r.status.message)
            for r in response.results
        ]

    async def _query_vector(self, request: gateway_pb2.SearchRequest) -> tuple[list[float], str | None]:
        which = request.WhichOneof("query")
        if which is None:
            raise RequestError(INVALID, "the search has no query: set one of text, image, vector or like_id")
        if which == "vector":
            return self._check_vector(request.vector.values), None
        if which == "like_id":
            check_id(request.like_id, "like_id")
            found = await self._get([request.like_id], include_vectors=True)
            if not found:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"no stored item has the id {request.like_id!r}")
            return list(found[0][1].vector), request.like_id
        if which == "text":
            self._check_text(request.text, "the query text")
            pool, item = self.text, encoder_pb2.EncodeItem(text=request.text)
        else:
            self._check_image(request.image, "the query image")
            pool, item = self.image, encoder_pb2.EncodeItem(image=request.image)
        (result,) = await self._encode(pool, [item])
        if result.vector is None:
            raise RequestError(_code(result.code), result.message)
        return result.vector, None

    async def _get(self, ids: Sequence[str], include_vectors: bool) -> list[tuple[int, index_pb2.IndexItem]]:
        groups = group_by_shard(ids, len(self.shards))
        timeout = self.config.search_timeout_ms / 1000
        hedge = self.config.hedge_delay_ms / 1000

        async def fetch(shard: Shard, positions: list[int]) -> list[index_pb2.IndexItem]:
            request = index_pb2.GetVectorsRequest(
                shard=shard.number, ids=[ids[p] for p in positions], include_vectors=include_vectors
            )
            reply = await shard.read(lambda stub, t: stub.GetVectors(request, timeout=t), timeout, hedge)
            return list(reply.items)

        replies = await asyncio.gather(*(fetch(self.shards[s], p) for s, p in groups.items()))
        found = {item.id: (number, item) for number, items in zip(groups, replies, strict=True) for item in items}
        return [found[i] for i in ids if i in found]

    # --- RPCs --------------------------------------------------------------------------------

    async def Search(
        self, request: gateway_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchResponse:
        """Encode the query, ask every shard for its top-K within the deadline, and merge exactly."""
        k = request.k or self.config.default_k
        if k > self.config.max_k:
            raise RequestError(INVALID, f"k={k} is above the limit of {self.config.max_k} (CROSSMODAL_GATEWAY_MAX_K)")
        vector, exclude = await self._query_vector(request)
        timeout = self.config.search_timeout_ms / 1000
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining - _DEADLINE_MARGIN)
        if timeout <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline expired before the shards were asked")
        shard_request = index_pb2.SearchShardRequest(
            vector=vector,
            # One more for the excluded item, but never past the limit the shards share with us: at K = MAX_K
            # a "more like this" search may answer K - 1 results rather than fail.
            k=min(k + (1 if exclude else 0), self.config.max_k),
            modality=request.target,
            filter=request.filter,
            exact=request.exact,
            model_id=self.model_id,
        )
        hedge = self.config.hedge_delay_ms / 1000

        async def ask(shard: Shard) -> Sequence[index_pb2.SearchHit]:
            started = time.perf_counter()
            one = index_pb2.SearchShardRequest()
            one.CopyFrom(shard_request)
            one.shard = shard.number
            reply = await shard.read(lambda stub, t: stub.SearchShard(one, timeout=t), timeout, hedge)
            SHARD_SEARCH_SECONDS.labels(str(shard.number)).observe(time.perf_counter() - started)
            return list(reply.hits)

        answers = await asyncio.gather(*(ask(s) for s in self.shards), return_exceptions=True)
        hits: list[Sequence[index_pb2.SearchHit]] = []
        partial: list[int] = []
        for shard, answer in zip(self.shards, answers, strict=True):
            if isinstance(answer, grpc.aio.AioRpcError):
                # A non-retryable shard error is the caller's (bad filter, wrong model): report it as is.
                raise RequestError(answer.code(), f"shard {shard.number}: {answer.details()}")
            if isinstance(answer, BaseException):
                log.warning("shard skipped", shard=shard.number, error=str(answer))
                partial.append(shard.number)
            else:
                hits.append(answer)
        if partial:
            PARTIAL_RESPONSES.inc()
            if request.require_complete:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"shards {partial} did not answer in time and complete results were required",
                )
        merged = merge_top_k(hits, k, exclude=exclude)
        return gateway_pb2.SearchResponse(
            results=[
                gateway_pb2.SearchResult(id=h.id, score=h.score, modality=h.modality, metadata=h.metadata, tags=h.tags)
                for h in merged
            ],
            partial_shards=partial,
            model_id=self.model_id,
        )

    async def Ingest(
        self, request_iterator: AsyncIterator[gateway_pb2.IngestRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.IngestResponse]:
        """Batch streamed items to the encoders, write each to every replica of its shard, ack per item."""
        if not self.model_id:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is still starting")
        acks: asyncio.Queue[gateway_pb2.IngestResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.config.ingest_concurrency)
        batch_size = self.config.ingest_batch
        wait = self.config.ingest_max_wait_ms / 1000

        async def run_batch(batch: list[gateway_pb2.IngestRequest]) -> None:
            try:
                for ack in await self._ingest_batch(batch):
                    INGEST_ITEMS.labels(
                        grpc.StatusCode.OK.name if ack.status.code == OK else _code(ack.status.code).name
                    ).inc()
                    await acks.put(ack)
            finally:
                slots.release()

        async def read() -> None:
            tasks: set[asyncio.Task[None]] = set()
            iterator = request_iterator.__aiter__()
            batch: list[gateway_pb2.IngestRequest] = []
            next_item: asyncio.Task[gateway_pb2.IngestRequest] | None = None
            try:
                while True:
                    if next_item is None:
                        next_item = asyncio.ensure_future(iterator.__anext__())
                    done, _ = await asyncio.wait({next_item}, timeout=wait if batch else None)
                    if done:
                        try:
                            item = next_item.result()
                        except StopAsyncIteration:
                            next_item = None
                            break
                        next_item = None
                        rejected = self._ingest_precheck(item)
                        if rejected is not None:
                            INGEST_ITEMS.labels(INVALID.name).inc()
                            await acks.put(rejected)
                            continue
                        batch.append(item)
                        if len(batch) < batch_size:
                            continue
                    if batch:
                        await slots.acquire()  # backpressure: stop reading while every slot is busy
                        task = asyncio.ensure_future(run_batch(batch))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        batch = []
                if batch:
                    await slots.acquire()
                    tasks.add(asyncio.ensure_future(run_batch(batch)))
                await asyncio.gather(*tasks)
            finally:
                if next_item is not None:
                    next_item.cancel()
                await acks.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (ack := await acks.get()) is not None:
                yield ack
            await reader
        finally:
            reader.cancel()

    def _ingest_precheck(self, item: gateway_pb2.IngestRequest) -> gateway_pb2.IngestResponse | None:
        try:
            check_id(item.id)
            which = item.WhichOneof("content")
            if which is None:
                raise RequestError(INVALID, "the item has no content: set image or text")
            if which == "text":
                self._check_text(item.text, "the item text")
            else:
                self._check_image(item.image, "the item image")
            self._check_metadata(dict(item.metadata), item.tags)
        except RequestError as exc:
            return gateway_pb2.IngestResponse(
                id=item.id, status=types_pb2.ItemStatus(code=exc.code.value[0], message=exc.message)
            )
        return None

    async def _ingest_batch(self, batch: list[gateway_pb2.IngestRequest]) -> list[gateway_pb2.IngestResponse]:
        texts = [i for i, item in enumerate(batch) if item.WhichOneof("content") == "text"]
        images = [i for i, item in enumerate(batch) if item.WhichOneof("content") == "image"]
        encoded: list[_Encoded | None] = [None] * len(batch)
        jobs = []
        if texts:
            jobs.append((texts, self._encode(self.text, [encoder_pb2.EncodeItem(text=batch[i].text) for i in texts])))
        if images:
            jobs.append(
                (images, self._encode(self.image, [encoder_pb2.EncodeItem(image=batch[i].image) for i in images]))
            )
        results = await asyncio.gather(*(job for _, job in jobs))
        for (positions, _), outcome in zip(jobs, results, strict=True):
            for position, one in zip(positions, outcome, strict=True):
                encoded[position] = one

        acks: list[gateway_pb2.IngestResponse] = [
            gateway_pb2.IngestResponse(id=item.id, shard=shard_of(item.id, len(self.shards))) for item in batch
        ]
        ready = []
        for position, result in enumerate(encoded):
            assert result is not None
            if result.vector is None:
                acks[position].status.code = result.code
                acks[position].status.message = result.message
            else:
                ready.append(position)

        async def write(shard: Shard, positions: list[int]) -> None:
            request = index_pb2.UpsertVectorsRequest(
                shard=shard.number,
                model_id=self.model_id,
                items=[
                    index_pb2.IndexItem(
                        id=batch[p].id,
                        vector=encoded[p].vector,  # type: ignore[union-attr]
                        modality=types_pb2.MODALITY_TEXT
                        if batch[p].WhichOneof("content") == "text"
                        else types_pb2.MODALITY_IMAGE,
                        metadata=batch[p].metadata,
                        tags=batch[p].tags,
                    )
                    for p in positions
                ],
            )
            timeout = self.config.write_timeout_ms / 1000
            outcomes = await shard.write(lambda stub: stub.UpsertVectors(request, timeout=timeout))
            for replica, outcome in outcomes:
                for n, p in enumerate(positions):
                    ack = acks[p]
                    if isinstance(outcome, BaseException):
                        code, message = status_of(outcome), describe_error(outcome)
                    else:
                        status = outcome.statuses[n]
                        if status.code == OK:
                            continue
                        code, message = _code(status.code), status.message
                    ack.failed_replicas.append(replica.address)
                    if ack.status.code == OK or code == INVALID:
                        ack.status.code = code.value[0]
                        ack.status.message = f"replica {replica.address}: {message}"

        groups = group_by_shard([batch[p].id for p in ready], len(self.shards))
        await asyncio.gather(*(write(self.shards[s], [ready[i] for i in idx]) for s, idx in groups.items()))
        return acks

    async def Delete(
        self, request: gateway_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteResponse:
        """Delete ids from every replica of their shards."""
        ids = self._check_ids(request.ids)
        groups = group_by_shard(ids, len(self.shards))
        timeout = self.config.write_timeout_ms / 1000

        async def delete(shard: Shard, positions: list[int]) -> int:
            one = index_pb2.DeleteVectorsRequest(shard=shard.number, ids=[ids[p] for p in positions])
            outcomes = await shard.write(lambda stub: stub.DeleteVectors(one, timeout=timeout))
            failed = [(r.address, o) for r, o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    "delete not applied on every replica (retry it; "
                    "deletes are idempotent): " + "; ".join(f"{a}: {describe_error(e)}" for a, e in failed),
                )
            return max(o.deleted for _, o in outcomes)  # type: ignore[union-attr]

        counts = await asyncio.gather(*(delete(self.shards[s], p) for s, p in groups.items()))
        return gateway_pb2.DeleteResponse(deleted=sum(counts))

    async def Get(self, request: gateway_pb2.GetRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.GetResponse:
        """Fetch stored items by id."""
        ids = self._check_ids(request.ids)
        found = await self._get(ids, include_vectors=False)
        present = {item.id for _, item in found}
        return gateway_pb2.GetResponse(
            items=[
                gateway_pb2.StoredItem(id=i.id, modality=i.modality, metadata=i.metadata, tags=i.tags, shard=s)
                for s, i in found
            ],
            missing=[i for i in ids if i not in present],
        )

    async def GetStats(
        self, request: gateway_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetStatsResponse:
        """Ask every replica of every shard for its statistics."""

        async def replica_stats(shard: Shard, index: int) -> gateway_pb2.ReplicaStats:
            replica = shard.replicas[index]
            try:
                reply = await replica.stub.GetShardStats(index_pb2.GetShardStatsRequest(), timeout=2.0)
            except grpc.aio.AioRpcError as exc:
                return gateway_pb2.ReplicaStats(address=replica.address, healthy=False, error=describe_error(exc))
            for stats in reply.shards:
                if stats.shard == shard.number:
                    return gateway_pb2.ReplicaStats(
                        address=replica.address,
                        healthy=True,
                        count=stats.count,
                        snapshot_age_seconds=stats.snapshot_age_seconds,
                    )
            return gateway_pb2.ReplicaStats(
                address=replica.address, healthy=False, error=f"the process does not serve shard {shard.number}"
            )

        shards = []
        total = 0
        for shard in self.shards:
            replicas = await asyncio.gather(*(replica_stats(shard, i) for i in range(len(shard.replicas))))
            healthy = [r for r in replicas if r.healthy]
            total += healthy[0].count if healthy else 0
            shards.append(gateway_pb2.GatewayShardStats(shard=shard.number, replicas=replicas))
        return gateway_pb2.GetStatsResponse(model_id=self.model_id, dim=self.dim, shards=shards, total_count=total)

    def _check_ids(self, ids: Sequence[str]) -> list[str]:
        if not ids:
            raise RequestError(INVALID, "no ids given")
        if len(ids) > self.config.max_batch:
            raise RequestError(
                INVALID, f"{len(ids)} ids; the limit is {self.config.max_batch} (CROSSMODAL_GATEWAY_MAX_BATCH)"
            )
        for item_id in ids:
            check_id(item_id)
        return list(ids)


def _code(number: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == number:
            return status
    return grpc.StatusCode.UNKNOWN


GATEWAY_METHOD_PREFIX = f"/{gateway_pb2.DESCRIPTOR.services_by_name['GatewayService'].full_name}/"


class ErrorMapping(grpc.aio.ServerInterceptor):
    """Maps RequestError and BackendError raised by the GatewayService handlers to their gRPC status."""

    def __init__(self, servicer: GatewayServicer) -> None:
        self.ready = lambda: bool(servicer.model_id)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap unary handlers so refused requests end with their status and message."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        # Health and reflection answer for themselves: while starting, Check must say NOT_SERVING.
        if not handler_call_details.method.startswith(GATEWAY_METHOD_PREFIX):
            return handler
        behavior = handler.unary_unary

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not self.ready():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is still starting")
            try:
                return await behavior(request, context)
            except (RequestError, BackendError) as exc:
                await context.abort(exc.code, exc.message)

        return grpc.unary_unary_rpc_method_handler(wrapped, handler.request_deserializer, handler.response_serializer)
