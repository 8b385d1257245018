"""The encoder engine both towers share: configuration, metrics, dynamic batching and the gRPC servicer.

A tower (`Tower`, written in services/encoder_text and services/encoder_image) knows its modality:
cheap input checks on the event loop, preprocessing in a worker pool, and the onnxruntime call.
Everything else lives here once: loading the bundle and warming it up, admission to the bounded
queue, per-item statuses, the streaming pipeline, metrics and the mapping of errors to status codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import structlog
from prometheus_client import Counter, Gauge, Histogram

from crossmodal.bundle import BundleError, Manifest, ModelBundle, select_providers
from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc, types_pb2
from services.common.batching import Admission, BatcherClosedError, DynamicBatcher, QueueFullError
from services.common.config import ConfigError, setting
from services.common.metrics import LATENCY_BUCKETS

log = structlog.get_logger("encoder")

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_KEY_BYTES = 256
# Chunks of one stream in progress at once: one can be preprocessed while the other waits for or
# runs inference, and one stream cannot take the whole queue.
STREAM_WINDOW = 2
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INTERNAL = grpc.StatusCode.INTERNAL

# --- configuration -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Settings both encoder services share: the bundle, onnxruntime, batching and request limits."""

    bundle: Path = setting(
        "ENCODER_BUNDLE",
        Path("models/default"),
        "Model bundle directory; a relative path is looked up in the working directory, then in the repository.",
    )
    precision: str = setting(
        "ENCODER_PRECISION",
        "fp32",
        "Which variant of the bundle to load (fp16 is meant for CUDA, int8 for CPU).",
        choices=("fp32", "fp16", "int8"),
    )
    providers: tuple[str, ...] = setting(
        "ENCODER_PROVIDERS",
        (),
        "onnxruntime execution providers in order "
        "of preference, comma-separated (cuda, cpu or full names); unset: "
        "CUDA then CPU, where available. A listed provider that is "
        "missing stops the service.",
    )
    intra_op_threads: int = setting(
        "ENCODER_INTRA_OP_THREADS",
        0,
        "onnxruntime threads inside one operator (0: one per physical core).",
        min=0,
        max=1024,
    )
    inter_op_threads: int = setting(
        "ENCODER_INTER_OP_THREADS", 1, "onnxruntime threads across independent operators.", min=1, max=1024
    )
    max_batch: int = setting(
        "ENCODER_MAX_BATCH",
        32,
        "Largest number of items run in one inference call (1 disables batching).",
        min=1,
        max=4096,
    )
    max_wait_ms: float = setting(
        "ENCODER_MAX_WAIT_MS",
        5.0,
        "How long the first waiting item may wait for others to fill a batch, in milliseconds.",
        min=0,
        max=60_000,
    )
    queue_size: int = setting(
        "ENCODER_QUEUE_SIZE",
        256,
        "Items admitted and not yet in an inference call "
        "(being preprocessed or waiting); a request that does not fit gets "
        "RESOURCE_EXHAUSTED at once.",
        min=1,
        max=1_000_000,
    )
    max_request_items: int = setting(
        "ENCODER_MAX_REQUEST_ITEMS",
        64,
        "Largest number of items in one Encode request or EncodeStream chunk.",
        min=1,
        max=100_000,
    )
    preprocess_workers: int = setting(
        "ENCODER_PREPROCESS_WORKERS",
        0,
        "Threads that tokenize texts or decode and preprocess images (0: one per CPU core).",
        min=0,
        max=256,
    )

    def __post_init__(self) -> None:
        if self.queue_size < self.max_batch:
            raise ConfigError(
                f"CROSSMODAL_ENCODER_QUEUE_SIZE ({self.queue_size}) must be at least "
                f"CROSSMODAL_ENCODER_MAX_BATCH ({self.max_batch}): a batch is filled from the queue"
            )

    @property
    def provider_names(self) -> list[str] | None:
        """The configured providers as onnxruntime names, or None for the default preference."""
        if not self.providers:
            return None
        return [PROVIDER_ALIASES.get(p.lower(), p) for p in self.providers]


def resolve_bundle_path(path: Path) -> Path:
    """Find the bundle directory: as given, or relative to the repository for a relative path."""
    if path.is_absolute() or path.is_dir():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.is_dir() else path


def check_encoder_config(cfg: EncoderConfig) -> Path:
    """Check what can be checked before loading: the bundle, its variant, the providers; raise ConfigError."""
    bundle = resolve_bundle_path(cfg.bundle)
    if not bundle.is_dir():
        raise ConfigError(
            f"CROSSMODAL_ENCODER_BUNDLE: no model bundle directory at {cfg.bundle} "
            f"(looked in {Path.cwd()} and {REPO_ROOT})"
        )
    try:
        manifest = Manifest.load(bundle)
    except BundleError as exc:
        raise ConfigError(f"CROSSMODAL_ENCODER_BUNDLE: {exc}") from exc
    if cfg.precision not in manifest.variants:
        raise ConfigError(
            f"CROSSMODAL_ENCODER_PRECISION: the bundle at {bundle} has no {cfg.precision} "
            f"variant (it has {', '.join(sorted(manifest.variants))})"
        )
    try:
        select_providers(cfg.provider_names)
    except BundleError as exc:
        raise ConfigError(f"CROSSMODAL_ENCODER_PROVIDERS: {exc}") from exc
    return bundle


# --- metrics -------------------------------------------------------------------------------------

BATCH_SIZE = Histogram(
    "crossmodal_encoder_batch_size",
    "Items per onnxruntime call, by tower.",
    ["tower"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
QUEUE_DEPTH = Gauge(
    "crossmodal_encoder_queue_depth",
    "Items admitted and not yet in an inference call (being preprocessed or waiting), by tower.",
    ["tower"],
)
QUEUE_CAPACITY = Gauge(
    "crossmodal_encoder_queue_capacity",
    "The queue's size (CROSSMODAL_ENCODER_QUEUE_SIZE), by tower.",
    ["tower"],
)
QUEUE_WAIT_SECONDS = Histogram(
    "crossmodal_encoder_queue_wait_seconds",
    "Time from an item's entry into the queue to the start of its inference call, by tower.",
    ["tower"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "crossmodal_encoder_inference_seconds",
    "Duration of one onnxruntime call (a whole batch), by tower.",
    ["tower"],
    buckets=LATENCY_BUCKETS,
)
PREPROCESS_SECONDS = Histogram(
    "crossmodal_encoder_preprocess_seconds",
    "Time in the worker pool to decode and preprocess one image, or to tokenize one request's texts, by tower.",
    ["tower"],
    buckets=LATENCY_BUCKETS,
)
ITEMS = Counter(
    "crossmodal_encoder_items",
    "Items answered, by tower and per-item status code name.",
    ["tower", "status"],
)
MODEL_INFO = Gauge(
    "crossmodal_encoder_model_info",
    "Constant 1, labelled with the model the tower serves.",
    ["tower", "model_id", "precision", "providers", "dim"],
)


class _PrometheusObserver:
    """Feeds the batcher's measurements to the tower's Prometheus series."""

    def __init__(self, tower: str) -> None:
        self._depth = QUEUE_DEPTH.labels(tower)
        self._size = BATCH_SIZE.labels(tower)
        self._seconds = INFERENCE_SECONDS.labels(tower)
        self._wait = QUEUE_WAIT_SECONDS.labels(tower)

    def queue_depth(self, items: int) -> None:
        """Record the current queue depth."""
        self._depth.set(items)

    def batch_done(self, size: int, seconds: float, waited: Sequence[float]) -> None:
        """Record one inference call."""
        self._size.observe(size)
        self._seconds.observe(seconds)
        for w in waited:
            self._wait.observe(w)


# --- the tower interface -------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One item ready for the tower: its input row and whether the input was truncated."""

    row: np.ndarray
    truncated: bool = False


class Tower(Protocol):
    """The modality-specific half of an encoder service."""

    name: str
    content_field: str
    preprocess_chunk: int

    def check(self, content: Any) -> str | None:
        """Cheap checks on the event loop; a message saying what is wrong, or None."""
        ...

    def prepare(self, contents: Sequence[Any]) -> list[Prepared | str]:
        """Turn raw contents into input rows (in the worker pool); a message in place of a bad item."""
        ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the tower on stacked rows; L2-normalised float32 (n, dim)."""
        ...

    def warmup_contents(self) -> list[Any]:
        """Valid inputs that exercise the whole path once before the service reports SERVING."""
        ...

    def describe(self, info: encoder_pb2.GetModelInfoResponse) -> None:
        """Fill the tower-specific fields of the model description."""
        ...


TowerFactory = Callable[[ModelBundle], Tower]


# --- the engine ----------------------------------------------------------------------------------


class EncoderNotReadyError(Exception):
    """A call arrived before the bundle was loaded and warmed up."""


class EncoderEngine:
    """Loads the bundle, owns the batcher and the preprocessing pool; encodes items with per-item status."""

    def __init__(self, config: EncoderConfig, tower_name: str, make_tower: TowerFactory) -> None:
        self.config = config
        self.tower_name = tower_name
        self.bundle_path = check_encoder_config(config)
        self._make_tower = make_tower
        self.bundle: ModelBundle | None = None
        self.tower: Tower | None = None
        workers = config.preprocess_workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess")
        self.batcher: DynamicBatcher[np.ndarray, np.ndarray] = DynamicBatcher(
            self._run_batch,
            max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000.0,
            queue_size=config.queue_size,
            observer=_PrometheusObserver(tower_name),
            thread_name=f"infer-{tower_name}",
        )
        self._preprocess_seconds = PREPROCESS_SECONDS.labels(tower_name)
        # The statuses this engine gives items, exported from the start so that rates work at once.
        self._items = {
            code: ITEMS.labels(tower_name, code.name)
            for code in (OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL)
        }
        QUEUE_CAPACITY.labels(tower_name).set(config.queue_size)
        QUEUE_DEPTH.labels(tower_name).set(0)

    @property
    def ready(self) -> bool:
        """Whether the bundle is loaded and warmed up."""
        return self.tower is not None

    async def start(self) -> None:
        """Load and verify the bundle, run a warm-up batch through the whole path, start the batcher."""
        cfg = self.config
        started = time.perf_counter()
        bundle = await asyncio.to_thread(
            ModelBundle.open,
            self.bundle_path,
            precision=cfg.precision,
            providers=cfg.provider_names,
            intra_op_threads=cfg.intra_op_threads,
            inter_op_threads=cfg.inter_op_threads,
            towers=(self.tower_name,),
        )
        tower = self._make_tower(bundle)
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._pool, tower.prepare, tower.warmup_contents())
        rows = [p.row for p in prepared if isinstance(p, Prepared)]
        if not rows:
            raise RuntimeError(f"warm-up inputs of the {self.tower_name} tower failed preprocessing: {prepared}")
        # Batch 1 and a full batch: onnxruntime sizes its buffers on first use of a shape, and the
        # first real requests should not pay for it.
        for size in sorted({1, cfg.max_batch}):
            batch = np.stack([rows[i % len(rows)] for i in range(size)])
            await asyncio.to_thread(tower.infer, batch)
        self.bundle, self.tower = bundle, tower
        self.batcher.start()
        MODEL_INFO.labels(
            self.tower_name,
            bundle.model_id,
            bundle.precision,
            ",".join(bundle.providers),
            str(bundle.embed_dim),
        ).set(1)
        log.info(
            "encoder ready",
            tower=self.tower_name,
            model_id=bundle.model_id,
            dim=bundle.embed_dim,
            precision=bundle.precision,
            providers=bundle.providers,
            max_batch=cfg.max_batch,
            max_wait_ms=cfg.max_wait_ms,
            queue_size=cfg.queue_size,
            load_seconds=round(time.perf_counter() - started, 3),
        )

    async def stop(self) -> None:
        """Stop the batcher and the worker pool (after the server drained its calls)."""
        await self.batcher.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run_batch(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        assert self.tower is not None
        out = self.tower.infer(np.stack(rows))
        return list(out)

    def _prepare_timed(self, contents: Sequence[Any]) -> list[Prepared | str]:
        assert self.tower is not None
        started = time.perf_counter()
        try:
            return self.tower.prepare(contents)
        finally:
            self._preprocess_seconds.observe(time.perf_counter() - started)

    def _check_item(self, item: encoder_pb2.EncodeItem, tower: Tower) -> str | None:
        if len(item.key.encode("utf-8")) > MAX_KEY_BYTES:
            return f"the key is {len(item.key.encode('utf-8'))} bytes, over the limit of {MAX_KEY_BYTES}"
        case = item.WhichOneof("content")
        if case is None:
            return f"the item has no content; set `{tower.content_field}`"
        if case != tower.content_field:
            return (
                f"this server encodes {tower.content_field}s, not {case}s; send {case}s to the encoder_{case} service"
            )
        return tower.check(getattr(item, case))

    async def encode(
        self, items: Sequence[encoder_pb2.EncodeItem], *, overflow_per_item: bool = False
    ) -> list[encoder_pb2.EncodeResult]:
        """Encode items; each result carries its own status.

        When the queue has no room for the valid items this raises `QueueFullError` (and
        `BatcherClosedError` while shutting down), or with `overflow_per_item` gives those items
        that status instead, keeping the other items' statuses.
        """
        tower = self.tower
        if tower is None:
            raise EncoderNotReadyError("the encoder is still loading its model; retry shortly")
        results = [encoder_pb2.EncodeResult(key=item.key) for item in items]
        valid: list[int] = []
        for i, item in enumerate(items):
            problem = self._check_item(item, tower)
            if problem is None:
                valid.append(i)
            else:
                self._fail(results[i], INVALID_ARGUMENT, problem)
        if not valid:
            return results
        try:
            admission = self.batcher.admit(len(valid))
        except (QueueFullError, BatcherClosedError) as exc:
            code = RESOURCE_EXHAUSTED if isinstance(exc, QueueFullError) else UNAVAILABLE
            if not overflow_per_item:
                self._items[code].inc(len(valid))
                raise
            for i in valid:
                self._fail(results[i], code, str(exc))
            return results
        with admission:
            await self._encode_valid(tower, items, valid, results, admission)
        return results

    async def _encode_valid(
        self,
        tower: Tower,
        items: Sequence[encoder_pb2.EncodeItem],
        valid: list[int],
        results: list[encoder_pb2.EncodeResult],
        admission: Admission[np.ndarray, np.ndarray],
    ) -> None:
        loop = asyncio.get_running_loop()
        contents = [getattr(items[i], tower.content_field) for i in valid]
        step = max(1, tower.preprocess_chunk)
        chunks = [contents[s : s + step] for s in range(0, len(contents), step)]
        done = await asyncio.gather(*(loop.run_in_executor(self._pool, self._prepare_timed, c) for c in chunks))
        prepared = [p for chunk in done for p in chunk]
        ready: list[tuple[int, Prepared]] = []
        for i, outcome in zip(valid, prepared, strict=True):
            if isinstance(outcome, Prepared):
                ready.append((i, outcome))
            else:
                admission.release(1)
                self._fail(results[i], INVALID_ARGUMENT, outcome)
        if not ready:
            return
        outputs = await admission.submit([p.row for _, p in ready])
        failures = [out for out in outputs if isinstance(out, Exception) and not isinstance(out, BatcherClosedError)]
        if failures:
            log.error("inference failed", items=len(failures), error=repr(failures[0]))
        for (i, prep), out in zip(ready, outputs, strict=True):
            result = results[i]
            if isinstance(out, BaseException):
                if isinstance(out, BatcherClosedError):
                    self._fail(result, UNAVAILABLE, str(out))
                else:
                    self._fail(result, INTERNAL, f"inference failed: {out}")
                continue
            result.vector.extend(out.tolist())
            result.truncated = prep.truncated
            self._items[OK].inc()

    def _fail(self, result: encoder_pb2.EncodeResult, code: grpc.StatusCode, message: str) -> None:
        result.status.code = code.value[0]
        result.status.message = message
        self._items[code].inc()


# --- the servicer --------------------------------------------------------------------------------


def _log_outcome(event: str, results: Sequence[encoder_pb2.EncodeResult]) -> None:
    # The interceptor already logs every RPC; this line adds the item counts, and is only worth
    # an info line when some items failed.
    failed = [r for r in results if r.status.code != 0]
    fields: dict[str, Any] = {
        "items": len(results),
        "failed": len(failed),
        "truncated": sum(1 for r in results if r.truncated),
    }
    if failed:
        fields["first_error"] = failed[0].status.message
        log.info(event, **fields)
    else:
        log.debug(event, **fields)


class _BadChunkError(Exception):
    """A stream chunk broke the request limits; the stream ends with INVALID_ARGUMENT."""


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    """crossmodal.v1.EncoderService over an `EncoderEngine`: validation and status codes, nothing else."""

    def __init__(self, engine: EncoderEngine, modality: types_pb2.Modality) -> None:
        self._engine = engine
        self._modality = modality

    def _check_count(self, count: int, what: str) -> str | None:
        limit = self._engine.config.max_request_items
        if count == 0:
            return f"the {what} has no items; send 1 to {limit}"
        if count > limit:
            return (
                f"the {what} has {count} items, over the limit of {limit} "
                "(CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS); split it"
            )
        return None

    def _model(self) -> tuple[str, int]:
        bundle = self._engine.bundle
        assert bundle is not None
        return bundle.model_id, bundle.embed_dim

    async def Encode(
        self,
        request: encoder_pb2.EncodeRequest,  # noqa: N802 - gRPC method name
        context: grpc.aio.ServicerContext,
    ) -> encoder_pb2.EncodeResponse:
        """Encode a batch of items; a full queue answers RESOURCE_EXHAUSTED for the whole call."""
        problem = self._check_count(len(request.items), "request")
        if problem is not None:
            await context.abort(INVALID_ARGUMENT, problem)
        code, message = OK, ""
        try:
            results = await self._engine.encode(request.items)
        except QueueFullError as exc:
            code, message = RESOURCE_EXHAUSTED, str(exc)
        except (EncoderNotReadyError, BatcherClosedError) as exc:
            code, message = UNAVAILABLE, str(exc)
        if code != OK:
            await context.abort(code, message)
        _log_outcome("encoded", results)
        model_id, dim = self._model()
        return encoder_pb2.EncodeResponse(model_id=model_id, dim=dim, results=results)

    async def EncodeStream(
        self,
        request_iterator: AsyncIterator[encoder_pb2.EncodeStreamRequest],  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[encoder_pb2.EncodeStreamResponse]:
        """Encode a stream of chunks, several at once, answering each chunk in order.

        A chunk that finds the queue full gets RESOURCE_EXHAUSTED as the status of each of its
        items and the stream goes on; a malformed chunk ends the stream with INVALID_ARGUMENT.
        """
        if not self._engine.ready:
            await context.abort(UNAVAILABLE, "the encoder is still loading its model; retry shortly")
        # Tasks of chunks in progress, in arrival order; then None at the end of the input, or the
        # exception that ended the reading. The bound stops reading (flow control) when it is full.
        pending: asyncio.Queue[asyncio.Task[list[encoder_pb2.EncodeResult]] | BaseException | None] = asyncio.Queue(
            maxsize=STREAM_WINDOW
        )

        async def read() -> None:
            index = 0
            try:
                async for chunk in request_iterator:
                    problem = self._check_count(len(chunk.items), f"stream chunk #{index}")
                    if problem is not None:
                        await pending.put(_BadChunkError(problem))
                        return
                    await pending.put(asyncio.create_task(self._encode_chunk(chunk.items)))
                    index += 1
            except Exception as exc:  # surfaced by the writer below, which owns the call's status
                await pending.put(exc)
                return
            await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                got = await pending.get()
                if got is None:
                    break
                if isinstance(got, _BadChunkError):
                    await context.abort(INVALID_ARGUMENT, str(got))
                if isinstance(got, BaseException):
                    raise got
                assert isinstance(got, asyncio.Task)
                model_id, dim = self._model()
                yield encoder_pb2.EncodeStreamResponse(model_id=model_id, dim=dim, results=await got)
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if isinstance(leftover, asyncio.Task):
                    leftover.cancel()

    async def _encode_chunk(self, items: Sequence[encoder_pb2.EncodeItem]) -> list[encoder_pb2.EncodeResult]:
        results = await self._engine.encode(items, overflow_per_item=True)
        _log_outcome("encoded chunk", results)
        return results

    async def GetModelInfo(
        self,
        request: encoder_pb2.GetModelInfoRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> encoder_pb2.GetModelInfoResponse:
        """Describe the served model and this server's limits."""
        bundle, tower = self._engine.bundle, self._engine.tower
        if bundle is None or tower is None:
            await context.abort(UNAVAILABLE, "the encoder is still loading its model; retry shortly")
        assert bundle is not None and tower is not None
        cfg = self._engine.config
        info = encoder_pb2.GetModelInfoResponse(
            model_id=bundle.model_id,
            dim=bundle.embed_dim,
            modality=self._modality,
            precision=bundle.precision,
            max_batch=cfg.max_batch,
            max_request_items=cfg.max_request_items,
            providers=bundle.providers,
        )
        tower.describe(info)
        return info


# --- the service ---------------------------------------------------------------------------------


class EncoderService:
    """A `Service` for the shared bootstrap: one tower behind `EncoderServicer` (subclassed per modality)."""

    name = "encoder"

    def __init__(
        self,
        config: EncoderConfig,
        tower_name: str,
        modality: types_pb2.Modality,
        make_tower: TowerFactory,
    ) -> None:
        self.engine = EncoderEngine(config, tower_name, make_tower)
        self._modality = modality

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add the encoder servicer to the gRPC server."""
        encoder_pb2_grpc.add_EncoderServiceServicer_to_server(EncoderServicer(self.engine, self._modality), server)
        return [encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name]

    async def start(self) -> None:
        """Load the bundle and warm it up; the server reports SERVING only after this returns."""
        await self.engine.start()

    async def stop(self) -> None:
        """Release the batcher and the worker pool."""
        await self.engine.stop()


__all__ = [
    "EncoderConfig",
    "EncoderEngine",
    "EncoderService",
    "EncoderServicer",
    "Prepared",
    "Tower",
]
