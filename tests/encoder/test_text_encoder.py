"""The encoder_text server on loopback: vectors, per-item statuses, limits, metrics and logs."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from crossmodal.bundle import ModelBundle
from crossmodal.v1 import encoder_pb2, types_pb2
from tests.encoder.helpers import MAX_REQUEST_ITEMS, MAX_TEXT_CHARS, SERVING, health_status, stub, texts
from tests.support import ServiceProcess, metric_value, wait_for

CAPTIONS = [
    "a photo of a red circle",
    "two blue squares on a white background",
    "A small green triangle in the top-left corner!",
    "Une photo d'un chien — très jolie 😀",
    "x",
]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def vectors(response: encoder_pb2.EncodeResponse) -> np.ndarray:
    """The response's vectors as one float32 matrix."""
    return np.array([list(r.vector) for r in response.results], dtype=np.float32)


def test_vectors_equal_the_in_process_bundle(text_server: ServiceProcess, reference: ModelBundle) -> None:
    response = stub(text_server).Encode(texts(*CAPTIONS), timeout=30)
    assert response.model_id == reference.model_id
    assert response.dim == reference.embed_dim
    assert [r.key for r in response.results] == [f"t{i}" for i in range(len(CAPTIONS))]
    assert all(r.status.code == 0 and r.status.message == "" for r in response.results)
    got = vectors(response)
    np.testing.assert_allclose(got, reference.encode_texts(CAPTIONS), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_text_beyond_the_context_is_truncated_and_flagged(text_server: ServiceProcess, reference: ModelBundle) -> None:
    long_text = "see " + "1234567890" * 9  # every digit is a token: 91 tokens, beyond the context of 77
    assert len(long_text) <= MAX_TEXT_CHARS
    response = stub(text_server).Encode(texts(long_text, "short"), timeout=30)
    assert [r.truncated for r in response.results] == [True, False]
    np.testing.assert_allclose(vectors(response)[0], reference.encode_texts([long_text])[0], atol=2e-5)


def test_bad_items_get_their_own_status_and_good_ones_succeed(
    text_server: ServiceProcess, reference: ModelBundle
) -> None:
    items = [
        encoder_pb2.EncodeItem(key="good-1", text="a yellow star"),
        encoder_pb2.EncodeItem(key="empty", text=""),
        encoder_pb2.EncodeItem(key="blank", text=" \t\n "),
        encoder_pb2.EncodeItem(key="too-long", text="a" * (MAX_TEXT_CHARS + 1)),
        encoder_pb2.EncodeItem(key="image", image=b"\x89PNG\r\n"),
        encoder_pb2.EncodeItem(key="nothing"),
        encoder_pb2.EncodeItem(key="k" * 257, text="a long key"),
        encoder_pb2.EncodeItem(key="good-2", text="a purple house"),
    ]
    response = stub(text_server).Encode(encoder_pb2.EncodeRequest(items=items), timeout=30)
    by_key = {r.key[:10]: r for r in response.results}
    assert [r.status.code for r in response.results] == [0, *([INVALID] * 6), 0]
    assert "empty" in by_key["empty"].status.message
    assert "empty" in by_key["blank"].status.message
    too_long = by_key["too-long"].status.message
    assert f"{MAX_TEXT_CHARS + 1} characters; the limit is {MAX_TEXT_CHARS} (CROSSMODAL_MAX_TEXT_CHARS)" in too_long
    assert "encoder_image" in by_key["image"].status.message
    assert "no content" in by_key["nothing"].status.message
    assert "over the limit of 256" in by_key["kkkkkkkkkk"].status.message
    assert all(not r.vector for r in response.results[1:-1])
    good = np.array([response.results[0].vector, response.results[-1].vector])
    np.testing.assert_allclose(good, reference.encode_texts(["a yellow star", "a purple house"]), atol=2e-5)
    assert health_status(text_server) == SERVING


@pytest.mark.parametrize("count", [0, MAX_REQUEST_ITEMS + 1])
def test_requests_outside_the_item_limits_are_refused(text_server: ServiceProcess, count: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(text_server).Encode(texts(*["a cat"] * count), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"send 1 to {MAX_REQUEST_ITEMS}" in info.value.details() or "over the limit" in info.value.details()


def test_model_info_describes_the_bundle_and_limits(text_server: ServiceProcess, reference: ModelBundle) -> None:
    info = stub(text_server).GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
    assert info.model_id == reference.model_id and info.dim == reference.embed_dim
    assert info.modality == types_pb2.MODALITY_TEXT
    assert info.precision == "fp32"
    assert info.context_length == reference.manifest.context_length
    assert (info.max_batch, info.max_request_items) == (8, MAX_REQUEST_ITEMS)
    assert list(info.providers) == ["CPUExecutionProvider"]


def test_metrics_count_items_by_status_and_time_each_stage(text_server: ServiceProcess) -> None:
    before = text_server.metrics()
    stub(text_server).Encode(texts("one", "two", ""), timeout=30)
    after = text_server.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("crossmodal_encoder_items_total", tower="text", status="OK") == 2
    assert delta("crossmodal_encoder_items_total", tower="text", status="INVALID_ARGUMENT") == 1
    assert delta("crossmodal_encoder_batch_size_sum", tower="text") == 2
    assert delta("crossmodal_encoder_inference_seconds_count", tower="text") >= 1
    assert delta("crossmodal_encoder_preprocess_seconds_count", tower="text") >= 1
    assert delta("crossmodal_encoder_queue_wait_seconds_count", tower="text") == 2
    assert metric_value(after, "crossmodal_encoder_queue_depth", tower="text") == 0
    assert metric_value(after, "crossmodal_encoder_queue_capacity", tower="text") == 256
    assert metric_value(after, "crossmodal_encoder_model_info", tower="text", precision="fp32") == 1


def test_a_failed_rpc_is_logged_with_its_request_id(text_server: ServiceProcess) -> None:
    # Successful fast RPCs are logged at debug only (tests/common/test_interceptors.py); failures always.
    with pytest.raises(grpc.RpcError):
        stub(text_server).Encode(texts(*["logged"] * 5000), timeout=30, metadata=[("x-request-id", "enc-test-42")])

    def logged() -> list[dict[str, object]]:
        lines = [json.loads(x) for x in text_server.log().splitlines() if x.startswith("{")]
        return [x for x in lines if x.get("request_id") == "enc-test-42" and x.get("method") == "Encode"]

    (line,) = wait_for(logged, 10, "the RPC's log line")
    assert line["code"] != "OK" and line["service"] == "encoder_text" and line["level"] == "warning"
