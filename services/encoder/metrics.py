"""The encoder's Prometheus series, labelled by tower, and `EncoderMetrics`, which feeds them."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from crossmodal.bundle import ModelBundle
from services.common.metrics import LATENCY_BUCKETS

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
    "Items answered, by tower and status code name: the item's own status, or the call's for a refused call.",
    ["tower", "status"],
)
MODEL_INFO = Gauge(
    "crossmodal_encoder_model_info",
    "Constant 1, labelled with the model the tower serves.",
    ["tower", "model_id", "precision", "providers", "dim"],
)


class EncoderMetrics:
    """One tower's series, labelled once; also the batcher's `BatchObserver`."""

    def __init__(self, tower: str, queue_size: int) -> None:
        self.tower = tower
        self._depth = QUEUE_DEPTH.labels(tower)
        self._size = BATCH_SIZE.labels(tower)
        self._seconds = INFERENCE_SECONDS.labels(tower)
        self._wait = QUEUE_WAIT_SECONDS.labels(tower)
        self._preprocess = PREPROCESS_SECONDS.labels(tower)
        QUEUE_CAPACITY.labels(tower).set(queue_size)
        self._depth.set(0)

    def queue_depth(self, items: int) -> None:
        """Record the current queue depth."""
        self._depth.set(items)

    def batch_done(self, size: int, seconds: float, waited: Sequence[float]) -> None:
        """Record one inference call."""
        self._size.observe(size)
        self._seconds.observe(seconds)
        for w in waited:
            self._wait.observe(w)

    def preprocessed(self, seconds: float) -> None:
        """Record one preprocessing task of the worker pool."""
        self._preprocess.observe(seconds)

    def items(self, status: str, count: int = 1) -> None:
        """Count `count` items answered with `status` (a status code name; 0 exports the series)."""
        ITEMS.labels(self.tower, status).inc(count)

    def model_loaded(self, bundle: ModelBundle) -> None:
        """Export the served model's description."""
        MODEL_INFO.labels(
            self.tower, bundle.model_id, bundle.precision, ",".join(bundle.providers), str(bundle.embed_dim)
        ).set(1)
