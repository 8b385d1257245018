"""Dynamic batching and the bounded queue, observed on a real server through its metrics.

The server here waits up to a minute for a batch to fill, so that batch boundaries are decided
by item counts alone: eight concurrent single-item requests must make one batch of eight, and
six waiting items hold six of the eight queue slots until they are withdrawn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from crossmodal.bundle import ModelBundle
from tests.encoder.helpers import SERVING, base_env, health_status, stub, texts
from tests.support import ServiceProcess, metric_value, wait_for

QUEUE_SIZE = 8
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@pytest.fixture(scope="module")
def patient_server(start_encoder: Callable[..., ServiceProcess], bundle_dir: Path) -> ServiceProcess:
    """A text server whose batches fill only by count: max_batch = queue = 8, max_wait one minute."""
    env = base_env(bundle_dir, max_batch="8", max_wait_ms="60000", queue_size=str(QUEUE_SIZE))
    return start_encoder("services.encoder_text", env)


def queue_depth(server: ServiceProcess) -> float:
    """The server's queue depth gauge."""
    return metric_value(server.metrics(), "crossmodal_encoder_queue_depth", tower="text")


def batches(server: ServiceProcess) -> tuple[float, float]:
    """(count, sum) of the server's batch-size histogram."""
    metrics = server.metrics()
    return (
        metric_value(metrics, "crossmodal_encoder_batch_size_count", tower="text"),
        metric_value(metrics, "crossmodal_encoder_batch_size_sum", tower="text"),
    )


def test_concurrent_requests_are_batched_together(patient_server: ServiceProcess, reference: ModelBundle) -> None:
    count_before, sum_before = batches(patient_server)
    client = stub(patient_server)
    captions = [f"caption number {i}" for i in range(8)]
    calls = [client.Encode.future(texts(c), timeout=60) for c in captions]
    results = [call.result() for call in calls]
    assert all(r.results[0].status.code == 0 for r in results)
    # Each caller gets the vector of its own item back out of the shared batch.
    got = np.array([r.results[0].vector for r in results])
    np.testing.assert_allclose(got, reference.encode_texts(captions), atol=2e-5)
    count_after, sum_after = batches(patient_server)
    assert (count_after - count_before, sum_after - sum_before) == (1, 8)
    metrics = patient_server.metrics()
    # Every batch so far held 8 items (the warm-up runs outside the batcher and is not counted).
    assert metric_value(metrics, "crossmodal_encoder_batch_size_bucket", tower="text", le="4.0") == 0
    assert metric_value(metrics, "crossmodal_encoder_batch_size_bucket", tower="text", le="8.0") == count_after


def test_a_full_queue_answers_resource_exhausted_and_recovers(patient_server: ServiceProcess) -> None:
    client = stub(patient_server)
    with pytest.raises(grpc.RpcError) as info:
        client.Encode(texts(*["too many"] * (QUEUE_SIZE + 1)), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"exceed the whole queue ({QUEUE_SIZE} items)" in info.value.details()

    holder = client.Encode.future(texts(*["waiting"] * 6), timeout=60)
    wait_for(lambda: queue_depth(patient_server) == 6, 30, "six items waiting in the queue")
    with pytest.raises(grpc.RpcError) as info:
        client.Encode(texts(*["no room"] * 3), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"6 of {QUEUE_SIZE} queue slots are taken, 3 needed" in info.value.details()
    rejected = metric_value(
        patient_server.metrics(), "crossmodal_encoder_items_total", tower="text", status="RESOURCE_EXHAUSTED"
    )
    assert rejected >= 3 + QUEUE_SIZE + 1

    holder.cancel()
    wait_for(lambda: queue_depth(patient_server) == 0, 30, "the cancelled items to leave the queue")
    response = client.Encode(texts(*[f"after {i}" for i in range(QUEUE_SIZE)]), timeout=60)
    assert all(r.status.code == 0 for r in response.results)
    assert health_status(patient_server) == SERVING


@pytest.fixture(scope="module")
def eager_server(start_encoder: Callable[..., ServiceProcess], bundle_dir: Path) -> ServiceProcess:
    """A text server with the production batching default (no CROSSMODAL_ENCODER_MAX_WAIT_MS set)."""
    env = base_env(bundle_dir, max_batch="8", queue_size=str(QUEUE_SIZE))
    del env["CROSSMODAL_ENCODER_MAX_WAIT_MS"]
    return start_encoder("services.encoder_text", env)


def test_the_batch_size_histogram_gives_the_mean_batch_size(eager_server: ServiceProcess) -> None:
    """sum / count of crossmodal_encoder_batch_size is the mean batch size (the benchmark and dashboard use it)."""
    count_before, sum_before = batches(eager_server)
    client = stub(eager_server)
    # One request of eight items is one batch of eight; three requests one after the other are
    # three batches of one, answered without waiting for company that never comes.
    assert all(r.status.code == 0 for r in client.Encode(texts(*[f"item {i}" for i in range(8)]), timeout=30).results)
    for i in range(3):
        assert client.Encode(texts(f"alone {i}"), timeout=30).results[0].status.code == 0
    count_after, sum_after = batches(eager_server)
    assert (count_after - count_before, sum_after - sum_before) == (4, 11)
    assert (sum_after - sum_before) / (count_after - count_before) == pytest.approx(11 / 4)
