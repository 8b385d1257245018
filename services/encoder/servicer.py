"""The gRPC servicer of crossmodal.v1.EncoderService: request checks, proto <-> domain, status codes.

Each RPC checks what only the request shows (item count, key size, which content is set), hands the
contents to the `EncoderEngine` and turns its outcomes into results. An error, whether it fails the
whole call or one item, becomes a status code in `_STATUS_CODES` and nowhere else.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
import structlog

from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc, types_pb2
from services.common.limits import LimitError, utf8_len
from services.encoder.batching import BatcherClosedError, QueueFullError
from services.encoder.engine import Encoded, EncoderEngine
from services.encoder.errors import EncoderNotReadyError, InferenceError, InvalidItemError
from services.encoder.metrics import EncoderMetrics

log = structlog.get_logger("encoder.servicer")

# Documented in encoder.proto (EncodeItem.key).
MAX_KEY_BYTES = 256

_STATUS_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (LimitError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidItemError, grpc.StatusCode.INVALID_ARGUMENT),
    # Nothing of the call ran: the client retries with backoff (or sends fewer items).
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EncoderNotReadyError, grpc.StatusCode.UNAVAILABLE),
    (BatcherClosedError, grpc.StatusCode.UNAVAILABLE),
    (InferenceError, grpc.StatusCode.INTERNAL),
)
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code that reports `error`; INTERNAL for anything not in the table (a bug)."""
    for cls, code in _STATUS_CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _log_outcome(results: Sequence[encoder_pb2.EncodeResult]) -> None:
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
        log.info("encoded", **fields)
    else:
        log.debug("encoded", **fields)


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    """crossmodal.v1.EncoderService over an `EncoderEngine`: checks, conversion and status codes, nothing else."""

    def __init__(self, engine: EncoderEngine, modality: types_pb2.Modality, metrics: EncoderMetrics) -> None:
        self._engine = engine
        self._modality = modality
        self._metrics = metrics
        # Every status an item can get, exported from the start so that rates work at once.
        for code in {grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, *(code for _, code in _STATUS_CODES)}:
            metrics.items(code.name, 0)

    async def Encode(
        self,
        request: encoder_pb2.EncodeRequest,  # noqa: N802 - gRPC method name
        context: grpc.aio.ServicerContext,
    ) -> encoder_pb2.EncodeResponse:
        """Encode a batch of items, each with its own status; a full queue refuses the whole call."""
        try:
            results = await self._encode(request.items)
            bundle, _ = self._engine.model()
        except Exception as exc:
            self._metrics.items(status_code_for(exc).name, len(request.items))
            await self._abort(context, exc)
        counts = collections.Counter(_CODE_NAMES[r.status.code] for r in results)
        for name, count in counts.items():
            self._metrics.items(name, count)
        _log_outcome(results)
        return encoder_pb2.EncodeResponse(model_id=bundle.model_id, dim=bundle.embed_dim, results=results)

    async def GetModelInfo(
        self,
        request: encoder_pb2.GetModelInfoRequest,  # noqa: N802
        context: grpc.aio.ServicerContext,
    ) -> encoder_pb2.GetModelInfoResponse:
        """Describe the served model and this server's limits."""
        try:
            bundle, tower = self._engine.model()
        except Exception as exc:
            await self._abort(context, exc)
        cfg = self._engine.config
        return encoder_pb2.GetModelInfoResponse(
            model_id=bundle.model_id,
            dim=bundle.embed_dim,
            modality=self._modality,
            precision=bundle.precision,
            max_batch=cfg.max_batch,
            max_request_items=cfg.max_request_items,
            providers=bundle.providers,
            **tower.describe(),  # type: ignore[arg-type]  # each tower names its own fields, of their types
        )

    # --- helpers ---------------------------------------------------------------------------------

    async def _encode(self, items: Sequence[encoder_pb2.EncodeItem]) -> list[encoder_pb2.EncodeResult]:
        self._check_count(len(items))
        results = [encoder_pb2.EncodeResult(key=item.key) for item in items]
        positions: list[int] = []
        contents: list[Any] = []
        for i, item in enumerate(items):
            try:
                contents.append(self._content(item))
            except (LimitError, InvalidItemError) as exc:
                self._fail(results[i], exc)
            else:
                positions.append(i)
        # Called even with no valid item, so that a server still loading says so.
        outcomes = await self._engine.encode(contents)
        for i, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, Encoded):
                results[i].vector.extend(outcome.vector.tolist())
                results[i].truncated = outcome.truncated
                results[i].seconds = outcome.seconds
            else:
                self._fail(results[i], outcome)
        return results

    def _check_count(self, count: int) -> None:
        limit = self._engine.config.max_request_items
        if count == 0:
            raise LimitError(f"the request has no items; send 1 to {limit}")
        if count > limit:
            raise LimitError(
                f"the request has {count} items, over the limit of {limit} "
                "(CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS); split it"
            )

    def _content(self, item: encoder_pb2.EncodeItem) -> Any:
        """The item's text or image; raise for a key over the limit or content the tower does not take."""
        if utf8_len(item.key) > MAX_KEY_BYTES:
            raise LimitError(f"the key is {utf8_len(item.key)} bytes, over the limit of {MAX_KEY_BYTES}")
        # A tower's name is also the EncodeItem content field it encodes.
        field = self._engine.tower_name
        case = item.WhichOneof("content")
        if case is None:
            raise InvalidItemError(f"the item has no content; set `{field}`")
        if case != field:
            raise InvalidItemError(
                f"this server encodes {field}s, not {case}s; send {case}s to the encoder_{case} service"
            )
        return getattr(item, case)

    @staticmethod
    def _fail(result: encoder_pb2.EncodeResult, error: Exception) -> None:
        result.status.code = status_code_for(error).value[0]
        result.status.message = str(error)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
        code = status_code_for(error)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("encoder call failed", error=repr(error))
            await context.abort(code, f"internal error: {type(error).__name__}")
        await context.abort(code, str(error))
        raise AssertionError("unreachable: context.abort raises")
