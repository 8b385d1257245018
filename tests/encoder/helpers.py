"""Helpers of the encoder tests: server environments, stubs, requests and images."""

from __future__ import annotations

import io
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc
from tests.support import ServiceProcess

# Limits of the shared test servers: small, so that inputs that break them are cheap to build.
MAX_TEXT_CHARS = 300
MAX_IMAGE_BYTES = 200_000
MAX_IMAGE_PIXELS = 1_000_000
MAX_REQUEST_ITEMS = 16
SERVING = health_pb2.HealthCheckResponse.SERVING


def base_env(bundle_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a test encoder server; `extra` maps ENCODER_* suffixes to values."""
    env = {
        "CROSSMODAL_ENCODER_BUNDLE": str(bundle_dir),
        "CROSSMODAL_ENCODER_INTRA_OP_THREADS": "1",
        "CROSSMODAL_ENCODER_PREPROCESS_WORKERS": "2",
        "CROSSMODAL_ENCODER_MAX_BATCH": "8",
        "CROSSMODAL_ENCODER_MAX_WAIT_MS": "2",
        "CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS": str(MAX_REQUEST_ITEMS),
        "CROSSMODAL_MAX_TEXT_CHARS": str(MAX_TEXT_CHARS),
        "CROSSMODAL_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "CROSSMODAL_ENCODER_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
        "CROSSMODAL_GRACE_SECONDS": "2",
    }
    env.update({f"CROSSMODAL_ENCODER_{k.upper()}": v for k, v in extra.items()})
    return env


def stub(proc: ServiceProcess) -> encoder_pb2_grpc.EncoderServiceStub:
    """A blocking EncoderService stub on a fresh channel to `proc`."""
    return encoder_pb2_grpc.EncoderServiceStub(proc.channel())


def health_status(proc: ServiceProcess) -> int:
    """The overall grpc.health.v1 status of `proc`."""
    with proc.channel() as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def texts(*values: str) -> encoder_pb2.EncodeRequest:
    """An Encode request of texts keyed t0, t1, ..."""
    return encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(key=f"t{i}", text=v) for i, v in enumerate(values)])


def image_bytes(img: Image.Image, fmt: str, **save: object) -> bytes:
    """Encode `img` in `fmt` (a Pillow format name)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()
