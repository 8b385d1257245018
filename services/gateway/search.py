"""Search and lookup across the shards: the query vector, the fan-out within the deadline, the exact merge.

With a write log the shards asked, and the partition map version they are told, come from the `Router`;
a shard that cannot answer at that version (a reshard moved on) says ABORTED, and the search is planned
once more at the map's latest version (`_PLANS`), so each partition is answered exactly once.

A shard that cannot answer in time (every replica down, overloaded or past the deadline) makes the answer
partial: the shard is named in `partial_shards` and the others' hits are merged. Anything else a shard
says is reported as it is (a refused filter is the caller's error), and an error that is neither is a
bug: INTERNAL, logged with its traceback, never disguised as an outage.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence

import grpc
import structlog

from crossmodal.transport import FAILOVER, code_of
from crossmodal.v1 import encoder_pb2, gateway_pb2, index_pb2, types_pb2
from services.common.placement import parent_of
from services.gateway.backends import OK, Backends, Encoded, ShardClient
from services.gateway.coalesce import Coalescer
from services.gateway.config import GatewayConfig
from services.gateway.errors import BackendError, GatewayError
from services.gateway.metrics import MOMENT_SEARCHES, PARTIAL_RESPONSES, SHARD_SEARCH_SECONDS
from services.gateway.moments import (
    FRAME_ONLY_KEYS,
    VIDEO_ID_KEY,
    WINDOW_ONLY_KEYS,
    Moment,
    frame_of,
    merge_moments,
    sound_of,
)
from services.gateway.routing import Router, merge_top_k

log = structlog.get_logger("gateway")

# Time kept back from the caller's deadline to merge and answer after the shards replied.
_DEADLINE_MARGIN = 0.02
# Plans of one search or read: the first at the map version held, one more after a shard said ABORTED.
_PLANS = 2
ABORTED = grpc.StatusCode.ABORTED
IMAGE, TEXT, VIDEO = types_pb2.MODALITY_IMAGE, types_pb2.MODALITY_TEXT, types_pb2.MODALITY_VIDEO
AUDIO = types_pb2.MODALITY_AUDIO
_PART_KEYS = frozenset({*FRAME_ONLY_KEYS, *WINDOW_ONLY_KEYS})


def _moment_result(moment: Moment) -> gateway_pb2.SearchResult:
    """A moment as a result: the video's or sound's id and metadata (the part's, less what the gateway added);
    a moment of a video's audio track is a VIDEO result, so that a player shows the video."""
    hit = moment.best.hit
    metadata = {k: v for k, v in hit.metadata.items() if k not in _PART_KEYS} if hit is not None else {}
    video = hit is None or hit.modality == VIDEO or VIDEO_ID_KEY in hit.metadata
    return gateway_pb2.SearchResult(
        id=moment.video,
        score=moment.score,
        modality=VIDEO if video else AUDIO,
        metadata=metadata,
        tags=hit.tags if hit is not None else [],
        start_seconds=moment.start,
        end_seconds=moment.end,
        best_seconds=moment.best_seconds,
    )


class Searcher:
    """Answers checked Search and Get requests from the shards."""

    def __init__(self, config: GatewayConfig, backends: Backends, router: Router | None = None) -> None:
        self.config = config
        self.backends = backends
        self.router = router or Router(backends.placement, len(backends.shards))
        self._timeout = config.search_timeout_ms / 1000
        self._hedge = config.hedge_delay_ms / 1000
        # Concurrent searches share calls to the text encoder and to each shard (services/gateway/coalesce.py).
        self._shard_lanes: dict[int, Coalescer[index_pb2.SearchShardRequest, index_pb2.SearchShardResponse]] = {}
        self._text_lane: Coalescer[encoder_pb2.EncodeItem, Encoded] | None = None
        in_flight, max_batch = config.coalesce_in_flight, config.limits.max_batch
        if in_flight:
            for shard in backends.shards:
                send = functools.partial(self._send_searches, shard)
                self._shard_lanes[shard.number] = Coalescer("shard", send, in_flight * len(shard.replicas), max_batch)

    async def search(self, request: gateway_pb2.SearchRequest, remaining: float | None) -> gateway_pb2.SearchResponse:
        """The merged top-K of every shard for a checked request; `remaining` is the caller's time left.

        Target MODALITY_VIDEO answers K moments, merged from an over-fetch of frames (`moments.py`); target
        MODALITY_AUDIO the same of audio windows, with short sounds as moments of their own.
        """
        truncated = False
        if request.WhichOneof("query") == "audio":
            request, truncated = await self._sound_query(request)
        k = request.k or self.config.default_k
        target = request.target
        if target in (VIDEO, AUDIO):
            results, partial = await self._moments(request, k, remaining)
        else:
            if target == IMAGE and request.include_video_frames:
                modalities = [IMAGE, VIDEO]
            elif target:
                modalities = [target]
            else:
                # "any" is images, texts and whole sounds: video frames only when asked for, audio windows never.
                modalities = [IMAGE, TEXT, AUDIO] if self.backends.audio is not None else [IMAGE, TEXT]
            # A video's own record is no image: room for them, then they are dropped; audio windows likewise.
            fetch = k
            if AUDIO in modalities:
                fetch = min(k * self.config.video_overfetch, self.config.limits.max_k)
            elif VIDEO in modalities:
                fetch = min(2 * k, self.config.limits.max_k)
            hits, partial = await self._top_hits(request, fetch, remaining, modalities)
            if VIDEO in modalities:
                hits = [h for h in hits if h.modality != VIDEO or frame_of(h) is not None][:k]
            if AUDIO in modalities:
                hits = [h for h in hits if h.modality != AUDIO or parent_of(h.id) is None][:k]
            results = [
                gateway_pb2.SearchResult(id=h.id, score=h.score, modality=h.modality, metadata=h.metadata, tags=h.tags)
                for h in hits
            ]
        return gateway_pb2.SearchResponse(
            results=results, partial_shards=partial, model_id=self.backends.model_id, query_truncated=truncated
        )

    async def _moments(
        self, request: gateway_pb2.SearchRequest, k: int, remaining: float | None
    ) -> tuple[list[gateway_pb2.SearchResult], list[int]]:
        """K moments of videos (from frames) or of sounds (from windows; short sounds whole), merged from an
        over-fetch of parts, and the shards that did not answer."""
        if request.target == AUDIO:
            self.backends.audio_pool()  # FAILED_PRECONDITION without an audio tower
        part_of = sound_of if request.target == AUDIO else frame_of
        parts = min(k * self.config.video_overfetch, self.config.limits.max_k)
        hits, partial = await self._top_hits(request, parts, remaining, [request.target])
        found = [f for f in map(part_of, hits) if f is not None]
        if request.WhichOneof("query") == "like_id":
            # "More like this" video or sound (or a part of one): moments of others, not its own.
            own = parent_of(request.like_id) or request.like_id
            found = [f for f in found if f.video != own]
        MOMENT_SEARCHES.observe(len(found))
        return [_moment_result(m) for m in merge_moments(found, k, self.config.video_moment_margin)], partial

    async def _sound_query(self, request: gateway_pb2.SearchRequest) -> tuple[gateway_pb2.SearchRequest, bool]:
        """The request with its query sound replaced by its vector, and whether the sound was cut to a clip."""
        pool, _ = self.backends.audio_pool()
        timeout = self.config.encode_timeout_ms / 1000
        (result,) = await self.backends.encode(pool, [encoder_pb2.EncodeItem(audio=request.audio)], timeout)
        if result.error is not None:
            raise GatewayError(result.error.code, f"the query sound: {result.error.message}")
        assert result.vector is not None
        by_vector = gateway_pb2.SearchRequest()
        by_vector.CopyFrom(request)
        by_vector.vector.values.extend(result.vector)  # replaces the sound: `query` is a oneof
        return by_vector, result.truncated

    async def _top_hits(
        self, request: gateway_pb2.SearchRequest, k: int, remaining: float | None, modalities: Sequence[int]
    ) -> tuple[list[index_pb2.SearchHit], list[int]]:
        """The merged top-`k` hits of every shard among `modalities`, and the shards that did not answer."""
        vector, exclude = await self._query_vector(request)
        timeout = self._timeout if remaining is None else min(self._timeout, remaining - _DEADLINE_MARGIN)
        if timeout <= 0:
            raise GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline expired before the shards were asked")
        shard_request = index_pb2.SearchShardRequest(
            vector=vector,
            # One more for the excluded item, but never past the limit the shards share with us: at K = MAX_K
            # a "more like this" search may answer K - 1 results rather than fail.
            k=min(k + (1 if exclude else 0), self.config.limits.max_k),
            filter=request.filter,
            exact=request.exact,
            model_id=self.backends.model_id,
        )
        if len(modalities) == 1:
            shard_request.modality = modalities[0]  # type: ignore[assignment]
        else:
            shard_request.modalities.extend(modalities)  # type: ignore[arg-type]
        for plan in range(_PLANS):
            shard_request.map_version = self.router.version
            shards = [self.backends.shards[n] for n in self.router.search_shards()]
            answers = await asyncio.gather(
                *(self._ask(s, shard_request, timeout, request.after) for s in shards), return_exceptions=True
            )
            if not any(_aborted(a) for a in answers):
                break
            if plan + 1 == _PLANS:
                raise GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    "the partition map moved on twice during this search (a reshard is under way); retry",
                )
            await self.router.refresh()
        hits: list[Sequence[index_pb2.SearchHit]] = []
        partial: list[int] = []
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BackendError):
                log.warning("shard skipped", shard=shard.number, error=answer.message)
                partial.append(shard.number)
            elif isinstance(answer, GatewayError):
                # What a shard refused for this search alone, in a batch of searches: as a direct refusal.
                raise GatewayError(answer.code, f"shard {shard.number}: {answer.message}")
            elif isinstance(answer, grpc.aio.AioRpcError):
                # What a shard refuses (a bad filter, the wrong model) is the caller's error: report it as is.
                raise GatewayError(answer.code(), f"shard {shard.number}: {answer.details()}")
            elif isinstance(answer, BaseException):
                raise answer
            else:
                hits.append(answer)
        if partial:
            PARTIAL_RESPONSES.inc()
            if request.require_complete:
                raise GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"shards {partial} did not answer in time and complete results were required",
                )
        return merge_top_k(hits, k, exclude=exclude), partial

    async def _ask(
        self,
        shard: ShardClient,
        request: index_pb2.SearchShardRequest,
        timeout: float,
        after: Sequence[types_pb2.LogPosition],
    ) -> list[index_pb2.SearchHit]:
        started = time.perf_counter()
        one = index_pb2.SearchShardRequest()
        one.CopyFrom(request)
        one.shard = shard.number
        one.after.extend(self._owned(shard.number, after))
        lane = self._shard_lanes.get(shard.number)
        if lane is None or one.after:
            # A read-your-writes search waits on the shard for its positions: it goes alone.
            reply = await self._search_one(shard, one, timeout)
        else:
            try:
                reply = await lane.submit(one, timeout)
            except TimeoutError:
                raise BackendError(
                    grpc.StatusCode.UNAVAILABLE, f"shard {shard.number} did not answer within {timeout:.3f}s"
                ) from None
        SHARD_SEARCH_SECONDS.labels(str(shard.number)).observe(time.perf_counter() - started)
        return list(reply.hits)

    async def _search_one(
        self, shard: ShardClient, request: index_pb2.SearchShardRequest, timeout: float
    ) -> index_pb2.SearchShardResponse:
        return await shard.read(lambda stub, t: stub.SearchShard(request, timeout=t), timeout, self._hedge)

    async def _send_searches(
        self, shard: ShardClient, searches: list[index_pb2.SearchShardRequest], timeout: float
    ) -> list[index_pb2.SearchShardResponse | BaseException]:
        """Send the searches queued for one shard: one SearchShard when alone, else one SearchShardBatch."""
        if len(searches) == 1 or shard.batch_unsupported:
            return await self._search_each(shard, searches, timeout)
        request = index_pb2.SearchShardBatchRequest(searches=searches)
        try:
            reply = await shard.read(lambda stub, t: stub.SearchShardBatch(request, timeout=t), timeout, self._hedge)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A shard of an older release (a rolling upgrade): one call per search from now on.
            log.warning("shard has no SearchShardBatch; searching it one query per call", shard=shard.number)
            shard.batch_unsupported = True
            return await self._search_each(shard, searches, timeout)
        out: list[index_pb2.SearchShardResponse | BaseException] = []
        retry: list[int] = []
        for position, result in enumerate(reply.results):
            code = code_of(result.status.code)
            if result.status.code == OK:
                out.append(result.response)
                continue
            if code in FAILOVER:
                # This replica could not serve it (still loading, say): the single path tries the others.
                retry.append(position)
            out.append(GatewayError(code, result.status.message))
        if retry:
            again = await self._search_each(shard, [searches[p] for p in retry], timeout)
            for position, answer in zip(retry, again, strict=True):
                out[position] = answer
        return out

    async def _search_each(
        self, shard: ShardClient, searches: list[index_pb2.SearchShardRequest], timeout: float
    ) -> list[index_pb2.SearchShardResponse | BaseException]:
        """Each search in its own hedged, failing-over SearchShard call; its answer or error, in order."""
        return await asyncio.gather(*(self._search_one(shard, s, timeout) for s in searches), return_exceptions=True)

    async def _send_texts(self, items: list[encoder_pb2.EncodeItem], timeout: float) -> list[Encoded]:
        """Encode the text queries queued for the text encoders in one call."""
        return await self.backends.encode(self.backends.text, items, timeout)

    async def _query_vector(self, request: gateway_pb2.SearchRequest) -> tuple[list[float], str | None]:
        which = request.WhichOneof("query")
        if which == "vector":
            return list(request.vector.values), None
        if which == "like_id":
            found = await self.get([request.like_id], include_vectors=True, after=request.after)
            if not found:
                raise GatewayError(grpc.StatusCode.NOT_FOUND, f"no stored item has the id {request.like_id!r}")
            return list(found[0][1].vector), request.like_id
        backends = self.backends
        timeout = self.config.encode_timeout_ms / 1000
        in_flight = self.config.coalesce_in_flight
        if which == "text" and in_flight:
            if self._text_lane is None:
                # No more texts in one call than the encoders take (ENCODER_MAX_REQUEST_ITEMS, 64 by default).
                most = backends.text.max_request_items or self.config.limits.max_batch
                self._text_lane = Coalescer(
                    "text_encoder", self._send_texts, in_flight * len(backends.text.addresses), most
                )
            try:
                result = await self._text_lane.submit(encoder_pb2.EncodeItem(text=request.text), timeout)
            except TimeoutError:
                raise BackendError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"the text encoder did not answer within {timeout:.3f}s"
                ) from None
        elif which == "text":
            (result,) = await backends.encode(backends.text, [encoder_pb2.EncodeItem(text=request.text)], timeout)
        else:
            # An image query goes alone: its decoding and tower cost far more than the call.
            pool = backends.image_pool()
            (result,) = await backends.encode(pool, [encoder_pb2.EncodeItem(image=request.image)], timeout)
        if result.error is not None:
            raise result.error
        assert result.vector is not None
        return result.vector, None

    def _owned(self, shard: int, after: Sequence[types_pb2.LogPosition]) -> list[types_pb2.LogPosition]:
        """The positions of `after` in partitions that `shard` owns: the only ones it waits for."""
        return [p for p in after if self.router.owns(shard, p.partition)]

    async def get(
        self, ids: Sequence[str], include_vectors: bool, after: Sequence[types_pb2.LogPosition] = ()
    ) -> list[tuple[int, index_pb2.IndexItem]]:
        """The stored items among `ids` with their shard numbers, in request order."""
        shards = self.backends.shards

        async def fetch(shard: ShardClient, positions: list[int], version: int) -> list[index_pb2.IndexItem]:
            request = index_pb2.GetVectorsRequest(
                shard=shard.number,
                ids=[ids[p] for p in positions],
                include_vectors=include_vectors,
                after=self._owned(shard.number, after),
                map_version=version,
            )
            reply = await shard.read(lambda stub, t: stub.GetVectors(request, timeout=t), self._timeout, self._hedge)
            return list(reply.items)

        for plan in range(_PLANS):
            groups = self.router.group(ids)
            version = self.router.version
            try:
                replies = await asyncio.gather(*(fetch(shards[s], p, version) for s, p in groups.items()))
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != ABORTED or plan + 1 == _PLANS:
                    raise
                await self.router.refresh()
        found = {item.id: (number, item) for number, items in zip(groups, replies, strict=True) for item in items}
        return [found[i] for i in ids if i in found]


def _aborted(answer: object) -> bool:
    """Whether a shard's answer says the map version the search was planned at is no longer answerable."""
    if isinstance(answer, grpc.aio.AioRpcError):
        return answer.code() == ABORTED
    return isinstance(answer, GatewayError) and answer.code == ABORTED
