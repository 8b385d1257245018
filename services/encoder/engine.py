"""The encoder's domain: what a tower provides, and the engine that loads it and encodes items in batches.

A tower (services/encoder_text, services/encoder_image) knows its modality: cheap input checks on the
event loop, preprocessing in the worker pool, and the onnxruntime call. The engine does the rest, once
for both: opening the bundle and warming it up, admission to the batcher's bounded queue, and an
outcome per item. It knows nothing of gRPC: each item ends as an `Encoded` vector or as the exception
that stopped it, and the servicer turns that into a status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from crossmodal.bundle import ModelBundle
from services.common.limits import LimitError
from services.encoder.batching import Admission, BatcherClosedError, DynamicBatcher
from services.encoder.config import EncoderConfig, check_encoder_config
from services.encoder.errors import EncoderNotReadyError, InferenceError, InvalidItemError
from services.encoder.metrics import EncoderMetrics

log = structlog.get_logger("encoder")


@dataclass(frozen=True)
class Prepared:
    """One item ready for the tower: its input row, whether the input was truncated, a sound's length."""

    row: np.ndarray
    truncated: bool = False
    seconds: float = 0.0


def prepare_each(
    contents: Sequence[bytes], prepare_one: Callable[[bytes], Prepared], what: str
) -> list[Prepared | InvalidItemError]:
    """Prepare encoded files one by one: an InvalidItemError fails its item alone, and so does any other error."""
    out: list[Prepared | InvalidItemError] = []
    for data in contents:
        try:
            out.append(prepare_one(data))
        except InvalidItemError as exc:
            out.append(exc)
        except Exception as exc:  # hostile files reach odd corners of the decoders; never fail the batch
            log.warning(f"{what} decoding failed unexpectedly", error=repr(exc))
            out.append(InvalidItemError(f"the {what} cannot be decoded ({type(exc).__name__}: {exc})"))
    return out


@dataclass(frozen=True)
class Encoded:
    """One item's L2-normalised embedding, whether its input was truncated to fit the model, a sound's length."""

    vector: np.ndarray
    truncated: bool = False
    seconds: float = 0.0


class Tower(Protocol):
    """The modality-specific half of an encoder service."""

    # Contents handed to one worker-pool task: the tokenizer batches texts, images decode one each.
    preprocess_chunk: int

    def cheap(self, contents: Sequence[Any]) -> bool:
        """Whether preparing `contents` costs less than a hop to the worker pool (then it runs on the loop)."""
        ...

    def check(self, content: Any) -> None:
        """Cheap checks on the event loop; raise `LimitError` for an input over a contract limit."""
        ...

    def prepare(self, contents: Sequence[Any]) -> list[Prepared | InvalidItemError]:
        """Turn raw contents into input rows (in the worker pool); an error in place of a bad item."""
        ...

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the tower on stacked rows; L2-normalised float32 (n, dim)."""
        ...

    def warmup_contents(self) -> list[Any]:
        """Valid inputs that exercise the whole path once before the service reports SERVING."""
        ...

    def describe(self) -> Mapping[str, float]:
        """The tower-specific fields of the model description (context length, image size, clip and rate)."""
        ...


TowerFactory = Callable[[ModelBundle, EncoderConfig], Tower]


class EncoderEngine:
    """Loads the bundle, owns the batcher and the preprocessing pool; encodes items with an outcome each."""

    def __init__(
        self, config: EncoderConfig, tower_name: str, make_tower: TowerFactory, metrics: EncoderMetrics
    ) -> None:
        self.config = config
        self.tower_name = tower_name
        self._bundle_path: Path = check_encoder_config(config)
        self._make_tower = make_tower
        self._metrics = metrics
        self.bundle: ModelBundle | None = None
        self.tower: Tower | None = None
        workers = config.preprocess_workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess")
        self.batcher: DynamicBatcher[np.ndarray, np.ndarray] = DynamicBatcher(
            self._run_batch,
            max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000.0,
            queue_size=config.queue_size,
            observer=metrics,
            thread_name=f"infer-{tower_name}",
        )

    def model(self) -> tuple[ModelBundle, Tower]:
        """The loaded bundle and tower; `EncoderNotReadyError` before the model is warm."""
        if self.bundle is None or self.tower is None:
            raise EncoderNotReadyError("the encoder is still loading its model; retry shortly")
        return self.bundle, self.tower

    async def start(self) -> None:
        """Load and verify the bundle, run a warm-up batch through the whole path, start the batcher."""
        cfg = self.config
        started = time.perf_counter()
        bundle = await asyncio.to_thread(
            ModelBundle.open,
            self._bundle_path,
            precision=cfg.precision,
            providers=cfg.provider_names,
            intra_op_threads=cfg.intra_op_threads,
            inter_op_threads=cfg.inter_op_threads,
            towers=(self.tower_name,),
        )
        tower = self._make_tower(bundle, cfg)
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
        self._metrics.model_loaded(bundle)
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
        # Waiting for a preprocessing task still running (a large image) must not stop the event
        # loop meanwhile: health checks and the calls being cancelled still need it.
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def encode(self, contents: Sequence[Any]) -> list[Encoded | Exception]:
        """Encode the contents of one request: per item, its vector or the error that stopped it.

        The whole call fails with `EncoderNotReadyError` before the model is warm, and with
        `QueueFullError` (or `BatcherClosedError` while stopping) when the queue has no room for
        every item that passed the tower's checks.
        """
        _, tower = self.model()
        outcomes: dict[int, Encoded | Exception] = {}
        valid: list[int] = []
        for i, content in enumerate(contents):
            try:
                tower.check(content)
            except LimitError as exc:
                outcomes[i] = exc
            else:
                valid.append(i)
        if valid:
            with self.batcher.admit(len(valid)) as admission:
                await self._encode_valid(tower, contents, valid, outcomes, admission)
        return [outcomes[i] for i in range(len(contents))]

    async def _encode_valid(
        self,
        tower: Tower,
        contents: Sequence[Any],
        valid: list[int],
        outcomes: dict[int, Encoded | Exception],
        admission: Admission[np.ndarray, np.ndarray],
    ) -> None:
        loop = asyncio.get_running_loop()
        step = max(1, tower.preprocess_chunk)
        chunks = [[contents[i] for i in valid[s : s + step]] for s in range(0, len(valid), step)]
        if len(chunks) == 1 and tower.cheap(chunks[0]):
            # A search's query text: tokenizing it takes less CPU than handing it to a pool thread and back.
            done = [self._prepare_timed(chunks[0])]
        else:
            done = await asyncio.gather(*(loop.run_in_executor(self._pool, self._prepare_timed, c) for c in chunks))
        ready: list[tuple[int, Prepared]] = []
        for i, prepared in zip(valid, (p for chunk in done for p in chunk), strict=True):
            if isinstance(prepared, Prepared):
                ready.append((i, prepared))
            else:
                admission.release(1)
                outcomes[i] = prepared
        if not ready:
            return
        outputs = await admission.submit([p.row for _, p in ready])
        failures = [o for o in outputs if isinstance(o, BaseException) and not isinstance(o, BatcherClosedError)]
        if failures:
            log.error("inference failed", tower=self.tower_name, items=len(failures), error=repr(failures[0]))
        for (i, prepared), out in zip(ready, outputs, strict=True):
            if isinstance(out, BatcherClosedError):
                outcomes[i] = out
            elif isinstance(out, BaseException):
                outcomes[i] = InferenceError(f"inference failed: {out}")
            else:
                outcomes[i] = Encoded(out, prepared.truncated, prepared.seconds)

    def _run_batch(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        assert self.tower is not None
        return list(self.tower.infer(np.stack(rows)))

    def _prepare_timed(self, contents: Sequence[Any]) -> list[Prepared | InvalidItemError]:
        assert self.tower is not None
        started = time.perf_counter()
        try:
            return self.tower.prepare(contents)
        finally:
            self._metrics.preprocessed(time.perf_counter() - started)
