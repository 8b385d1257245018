"""The typed settings of an encoder service, the same for every tower, and the checks made before loading.

Every tower reads the same variables: a text server ignores the image-only `max_image_pixels` and the
audio-only limits, an image server the tokenizer's context. The contract limits (text length, image bytes, ...) are the
shared `Limits`, read from the same variables as the gateway and the index, so the services cannot
disagree about what a valid input is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from crossmodal.bundle import BundleError, Manifest, select_providers
from crossmodal.bundle.manifest import PRECISIONS
from services.common.config import ConfigError, ServerConfig, setting
from services.common.limits import Limits

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The bundle, onnxruntime, batching and input limits of one encoder."""

    bundle: Path = setting(
        "ENCODER_BUNDLE",
        Path("models/default"),
        "Model bundle directory; a relative path is looked up in the working directory, then in the repository.",
    )
    precision: str = setting(
        "ENCODER_PRECISION",
        "fp32",
        "Which variant of the bundle to load (fp16 is meant for CUDA, int8 for CPU).",
        choices=PRECISIONS,
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
        0.0,
        "How long a queued item may wait for more items to fill a batch while the inference "
        "thread is idle, in milliseconds; 0: a batch runs as soon as the thread is free, with "
        "whatever is queued (batches still fill up under load, while the previous batch runs).",
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
        "Largest number of items in one Encode request.",
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
    max_image_pixels: int = setting(
        "ENCODER_MAX_IMAGE_PIXELS",
        50_000_000,
        "Largest image accepted by encoder_image, in "
        "pixels (width x height), checked from the header before decoding "
        "(decompression bombs).",
        min=1,
        max=2**40,
    )
    max_audio_seconds: float = setting(
        "ENCODER_MAX_AUDIO_SECONDS",
        600.0,
        "Longest sound encoder_audio decodes, in seconds; decoding stops there and the sound is refused "
        "(INVALID_ARGUMENT), so a long or hostile file costs at most this much audio in memory.",
        min=0.1,
        max=86_400,
    )
    max_audio_channels: int = setting(
        "ENCODER_MAX_AUDIO_CHANNELS",
        8,
        "Most channels of a sound encoder_audio accepts (they are mixed to mono).",
        min=1,
        max=64,
    )
    limits: Limits = dataclasses.field(default_factory=Limits)

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


@dataclasses.dataclass(frozen=True)
class EncoderServiceConfig:
    """Everything an encoder_text, encoder_image or encoder_audio process reads from the environment."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)


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
