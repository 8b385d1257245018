"""The encoder_image server on loopback: formats, EXIF orientation, input limits and per-item statuses."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from crossmodal.bundle import ModelBundle, decode_image, preprocess_image
from crossmodal.v1 import encoder_pb2, types_pb2
from tests.encoder.helpers import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    SERVING,
    health_status,
    image_bytes,
    stub,
)
from tests.support import ServiceProcess, metric_value

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def picture(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture that is not symmetric, so that rotations change it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    arr[: height // 3, : width // 4] = rng.integers(0, 256, 3, dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def encode(server: ServiceProcess, *images: bytes) -> encoder_pb2.EncodeResponse:
    """One Encode call with these images, keyed i0, i1, ..."""
    items = [encoder_pb2.EncodeItem(key=f"i{i}", image=b) for i, b in enumerate(images)]
    return stub(server).Encode(encoder_pb2.EncodeRequest(items=items), timeout=60)


def png_with_size(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims another size (CRC fixed up)."""
    data = bytearray(image_bytes(Image.new("RGB", (4, 4), "red"), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("WEBP", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("PNG", "L"),
    ],
)
def test_supported_formats_match_the_in_process_bundle(
    image_server: ServiceProcess, reference: ModelBundle, fmt: str, mode: str
) -> None:
    data = image_bytes(picture().convert(mode), fmt)
    response = encode(image_server, data)
    (result,) = response.results
    assert result.status.code == 0, result.status.message
    assert response.model_id == reference.model_id and response.dim == reference.embed_dim
    # The reference decodes the same bytes with Pillow alone: the service adds nothing of its own.
    expected = reference.encode_images([Image.open(io.BytesIO(data))])
    np.testing.assert_allclose(np.array([result.vector]), expected, atol=2e-5)
    assert abs(np.linalg.norm(result.vector) - 1.0) < 1e-5


def test_gif_uses_its_first_frame(image_server: ServiceProcess, reference: ModelBundle) -> None:
    frames = [
        picture(seed=1).convert("P"),
        picture(seed=2).transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P"),
    ]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    (result,) = encode(image_server, data).results
    first = Image.open(io.BytesIO(data))
    first.seek(0)
    np.testing.assert_allclose(np.array([result.vector]), reference.encode_images([first]), atol=2e-5)


def test_exif_orientation_is_honoured(image_server: ServiceProcess, reference: ModelBundle) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = image_bytes(picture(), "JPEG", exif=exif.tobytes(), quality=95)
    plain = image_bytes(picture(), "JPEG", quality=95)
    rotated, unrotated = encode(image_server, data, plain).results
    # The same pixels, rotated as a viewer would show them.
    upright = Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270)
    assert upright.size == (64, 96)
    np.testing.assert_allclose(np.array([rotated.vector]), reference.encode_images([upright]), atol=2e-5)
    assert not np.allclose(rotated.vector, unrotated.vector, atol=1e-3)


def test_bad_images_get_their_own_status_and_good_ones_succeed(
    image_server: ServiceProcess, reference: ModelBundle
) -> None:
    good = image_bytes(picture(seed=3), "PNG")
    jpeg = image_bytes(picture(width=300, height=200, seed=4), "JPEG", quality=90)
    bomb = image_bytes(Image.new("1", (2000, 1000)), "PNG")  # 2 M pixels in a few kilobytes
    assert len(bomb) < 20_000
    cases = {
        "empty": (b"", "empty"),
        "too-big": (b"\xff" * (MAX_IMAGE_BYTES + 1), f"the limit is {MAX_IMAGE_BYTES} (CROSSMODAL_MAX_IMAGE_BYTES)"),
        "garbage": (b"this is not an image at all", "not an image in a supported format"),
        "truncated-png": (good[: len(good) // 2], "truncated or corrupt"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "truncated"),
        "bomb": (bomb, f"over the limit of {MAX_IMAGE_PIXELS} pixels"),
        "huge-header": (png_with_size(100_000, 100_000), f"over the limit of {MAX_IMAGE_PIXELS} pixels"),
        "zero-size": (png_with_size(0, 10), "not an image"),
        "text": (None, "encoder_text"),
    }
    items = [encoder_pb2.EncodeItem(key="good-1", image=good)]
    for key, (data, _) in cases.items():
        items.append(
            encoder_pb2.EncodeItem(key=key, text="a cat")
            if data is None
            else encoder_pb2.EncodeItem(key=key, image=data)
        )
    items.append(encoder_pb2.EncodeItem(key="good-2", image=jpeg))
    response = stub(image_server).Encode(encoder_pb2.EncodeRequest(items=items), timeout=60)
    results = {r.key: r for r in response.results}
    for key, (_, fragment) in cases.items():
        assert results[key].status.code == INVALID, key
        assert fragment in results[key].status.message, (key, results[key].status.message)
        assert not results[key].vector
    assert results["good-1"].status.code == 0 and results["good-2"].status.code == 0
    expected = reference.encode_images([Image.open(io.BytesIO(good)), Image.open(io.BytesIO(jpeg))])
    np.testing.assert_allclose(np.array([results["good-1"].vector, results["good-2"].vector]), expected, atol=2e-5)
    assert health_status(image_server) == SERVING
    # Still serving real work after all that.
    assert encode(image_server, good).results[0].status.code == 0


def test_model_info_and_preprocessing_metrics(image_server: ServiceProcess, reference: ModelBundle) -> None:
    info = stub(image_server).GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
    assert info.modality == types_pb2.MODALITY_IMAGE
    assert info.image_size == reference.image_config.height
    assert info.context_length == 0
    metrics = image_server.metrics()
    assert metric_value(metrics, "crossmodal_encoder_preprocess_seconds_count", tower="image") > 0
    assert metric_value(metrics, "crossmodal_encoder_items_total", tower="image", status="OK") > 0


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(image_server: ServiceProcess, reference: ModelBundle) -> None:
    """A photo much larger than the input is decoded scaled (JPEG DCT scaling), close to a full decode."""
    cfg = reference.image_config
    exif = Image.Exif()
    exif[0x0112] = 6
    data = image_bytes(picture(1200, 800, seed=3), "JPEG", exif=exif.tobytes(), quality=90)
    assert len(data) <= MAX_IMAGE_BYTES and MAX_IMAGE_PIXELS >= 1200 * 800
    scaled_img = decode_image(data, max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_IMAGE_PIXELS, scale_for=cfg)
    full_img = decode_image(data, max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_IMAGE_PIXELS)
    assert scaled_img.size != full_img.size and scaled_img.height > scaled_img.width
    scaled = reference.encode_pixels(preprocess_image(scaled_img, cfg)[None])
    full = reference.encode_pixels(preprocess_image(full_img, cfg)[None])
    # The two paths differ measurably, so matching one of them says which path the server took.
    assert np.abs(scaled - full).max() > 1e-4
    (result,) = encode(image_server, data).results
    assert result.status.code == 0, result.status.message
    np.testing.assert_allclose(np.array([result.vector]), scaled, atol=2e-5)
    assert float(np.dot(result.vector, full[0])) >= 0.995
