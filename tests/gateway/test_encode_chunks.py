"""Encode calls larger than one gRPC message: the gateway splits them by size, keeping the items' order."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.bundle import ModelBundle
from crossmodal.v1 import encoder_pb2
from services.common.placement import Placement
from services.gateway.backends import Backends, EncoderPool
from tests.encoder.conftest import bundle_dir, reference, start_encoder  # noqa: F401 - shared fixtures
from tests.encoder.helpers import base_env
from tests.support import ServiceProcess

LIMIT = 1 << 20


def noise_png(seed: int) -> bytes:
    """A ~370 KB PNG of random pixels (noise does not compress)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (350, 350, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return out.getvalue()


def test_items_over_one_message_go_in_several_calls_in_order(
    start_encoder: Callable[..., ServiceProcess],  # noqa: F811
    bundle_dir: Path,  # noqa: F811
    reference: ModelBundle,  # noqa: F811
) -> None:
    # Both sides refuse messages over 1 MiB here; the eight images are ~3 MB in all.
    server = start_encoder(
        "services.encoder_image",
        {**base_env(bundle_dir), "CROSSMODAL_MAX_MESSAGE_BYTES": str(LIMIT), "CROSSMODAL_MAX_IMAGE_BYTES": "900000"},
    )
    images = [noise_png(seed) for seed in range(8)]
    assert sum(map(len, images)) > 2 * LIMIT

    async def scenario() -> list[object]:
        pool = EncoderPool("image", [server.address], tls=None, max_message_bytes=LIMIT)
        backends = Backends(pool, pool, [], Placement(1), model_id=reference.model_id, dim=reference.embed_dim)
        try:
            return await backends.encode(pool, [encoder_pb2.EncodeItem(image=data) for data in images], 60)
        finally:
            await pool.close()

    encoded = asyncio.run(scenario())
    assert all(e.error is None for e in encoded), [e.error for e in encoded]
    expected = reference.encode_images([Image.open(io.BytesIO(data)).convert("RGB") for data in images])
    for got, want in zip(encoded, expected, strict=True):
        assert float(np.dot(got.vector, want)) > 0.999
