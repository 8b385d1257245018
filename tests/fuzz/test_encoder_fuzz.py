"""Fuzz the internal EncoderService of both towers: Encode and GetModelInfo."""

from __future__ import annotations

import math
from typing import Any

import grpc
from hypothesis import strategies as st

from crossmodal.v1 import encoder_pb2
from tests.fuzz import catalog
from tests.fuzz.catalog import INVALID, OK
from tests.fuzz.harness import Env, call, raw_unary, resources, run_case, varint
from tests.fuzz.strategies import bomb_headers, image_bytes, short_strings, text_ok, texts

MAX_ITEMS = 64  # CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS
MAX_KEY_BYTES = 256
# Headroom for the peak RSS of the image encoder while it refuses decompression bombs: one bomb
# decoded would take gigabytes, refusing from the header takes nothing measurable.
BOMB_HWM_SLACK_KIB = 64 * 1024

keys = st.one_of(st.just(""), short_strings(), st.sampled_from(["k" * MAX_KEY_BYTES, "k" * (MAX_KEY_BYTES + 1)]))


def _content(images: dict[str, bytes]) -> st.SearchStrategy[tuple[str, Any, str]]:
    """(field, value, class) of one item's content: a text, an image of some class, or nothing."""
    return st.one_of(
        texts().map(lambda t: ("text", t, "text")),
        image_bytes(images).map(lambda ci: ("image", ci[1], ci[0])),
        st.just(("", None, "none")),
    )


def _items(images: dict[str, bytes], content: st.SearchStrategy[tuple[str, Any, str]]) -> st.SearchStrategy[Any]:
    item = st.tuples(keys, content)
    return st.one_of(
        st.lists(item, min_size=1, max_size=4),
        st.just([]),
        st.builds(lambda n: [("k", ("text", "a red circle", "text"))] * n, st.sampled_from([MAX_ITEMS, MAX_ITEMS + 1])),
    )


def _request(items: list[tuple[str, tuple[str, Any, str]]]) -> list[encoder_pb2.EncodeItem]:
    out = []
    for key, (field, value, _) in items:
        out.append(encoder_pb2.EncodeItem(key=key, **({field: value} if field else {})))
    return out


def _expected_item(tower: str, key: str, field: str, value: Any, cls: str) -> frozenset[grpc.StatusCode] | None:
    """The per-item codes the documentation allows, or None when any documented one will do."""
    if len(key.encode()) > MAX_KEY_BYTES or field != tower:
        return frozenset({INVALID})
    if field == "text":
        return frozenset({OK}) if text_ok(value) else frozenset({INVALID})
    if cls == "real":
        return frozenset({OK})
    if cls == "random" or not value:
        return frozenset({INVALID})
    return None  # a truncated or corrupted image may still decode


def _check_result(env: Env, result: encoder_pb2.EncodeResult, expected: frozenset[grpc.StatusCode] | None) -> None:
    code = catalog.check_item("encoder", "Encode", "items", result.status.code, result.status.message)
    if expected is not None:
        assert code in expected, (code, result.status.message, expected)
    if code == OK:
        assert len(result.vector) == env.dim
        norm = math.sqrt(sum(v * v for v in result.vector))
        assert all(math.isfinite(v) for v in result.vector) and abs(norm - 1.0) < 1e-3


def _encode_case(env: Env, tower: str, items: list[tuple[str, tuple[str, Any, str]]]) -> None:
    request = encoder_pb2.EncodeRequest(items=_request(items))
    outcome = call(f"encoder_{tower}.Encode", env.encoder(tower).Encode, request)
    catalog.check_call(f"encoder_{tower}", "Encode", "items", outcome.code, outcome.message)
    if not 1 <= len(items) <= MAX_ITEMS:
        assert outcome.code == INVALID
        return
    if outcome.code != OK:
        return
    assert outcome.response.model_id == env.model_id and outcome.response.dim == env.dim
    assert len(outcome.response.results) == len(items)
    for (key, (field, value, cls)), result in zip(items, outcome.response.results, strict=True):
        assert result.key == key
        _check_result(env, result, _expected_item(tower, key, field, value, cls))


def test_encode_text_tower(env: Env) -> None:
    """Odd, empty and over-long texts, keys of every size, images and empty items sent to the text tower."""
    text_first = st.one_of(texts().map(lambda t: ("text", t, "text")), _content(env.images))
    run_case(500, _items(env.images, text_first), lambda items: _encode_case(env, "text", items))


def test_encode_image_tower(env: Env) -> None:
    """Real, truncated, corrupted, random and junk-header images (and texts) sent to the image tower."""
    image_first = st.one_of(image_bytes(env.images).map(lambda ci: ("image", ci[1], ci[0])), _content(env.images))
    run_case(500, _items(env.images, image_first), lambda items: _encode_case(env, "image", items))


def test_decompression_bombs_refused_without_allocating(env: Env) -> None:
    """PNG/JPEG/GIF/BMP/WebP/TIFF headers announcing huge sizes: refused per item, the peak RSS stays put."""
    pid = env.processes["image"].proc.pid
    before = resources(pid).hwm_kib

    def body(bomb: tuple[str, int, int, bytes]) -> None:
        fmt, width, height, data = bomb
        request = encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(key=fmt, image=data)])
        outcome = call("encoder_image.Encode", env.encoder("image").Encode, request)
        catalog.check_call("encoder_image", "Encode", "items", outcome.code, outcome.message)
        assert outcome.code == OK, outcome.message
        (result,) = outcome.response.results
        code = catalog.check_item("encoder", "Encode", "items", result.status.code, result.status.message)
        assert code == INVALID, (fmt, width, height, result.status.message)

    run_case(400, bomb_headers(), body)
    grown = resources(pid).hwm_kib - before
    assert grown < BOMB_HWM_SLACK_KIB, f"the image encoder's peak RSS grew by {grown} KiB while refusing bombs"


def invalid_utf8_item(field: int) -> st.SearchStrategy[bytes]:
    """An EncodeItem with invalid UTF-8 in its key (1) or text (2), serialised by hand."""
    bad = st.one_of(
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"a\xfeb"]),
        st.binary(min_size=1, max_size=16).filter(lambda b: not _is_utf8(b)),
    )
    return bad.map(lambda b: varint((field << 3) | 2) + varint(len(b)) + b)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_encoder_raw_bytes(env: Env) -> None:
    """Random bytes and hand-built messages with invalid UTF-8 to every encoder method."""
    item = st.one_of(invalid_utf8_item(1), invalid_utf8_item(2))
    bad_request = item.map(lambda body: varint((1 << 3) | 2) + varint(len(body)) + body)
    payload = st.one_of(st.binary(max_size=64), bad_request, bad_request)
    cases = st.tuples(st.sampled_from(["text", "image"]), st.sampled_from(["Encode", "GetModelInfo"]), payload)

    def body(case: tuple[str, str, bytes]) -> None:
        tower, method, data = case
        path = f"/crossmodal.v1.EncoderService/{method}"
        label = f"encoder_{tower}.{method}"
        response = encoder_pb2.EncodeResponse if method == "Encode" else encoder_pb2.GetModelInfoResponse
        outcome = call(label, raw_unary(env, tower, path, response), data)
        catalog.check_call(f"encoder_{tower}", method, "raw", outcome.code, outcome.message)
        if not _parses(method, data):
            assert outcome.code == INVALID, (method, data, outcome)
        elif outcome.code == OK and method == "Encode":
            for result in outcome.response.results:
                catalog.check_item("encoder", method, "raw", result.status.code, result.status.message)

    run_case(600, cases, body)


def _parses(method: str, data: bytes) -> bool:
    message = {
        "Encode": encoder_pb2.EncodeRequest,
        "GetModelInfo": encoder_pb2.GetModelInfoRequest,
    }[method]()
    try:
        message.ParseFromString(data)
    except Exception:
        return False
    return True
