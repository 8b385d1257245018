"""Open a model bundle: verify it against its manifest, then run its towers with onnxruntime."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip
from crossmodal.bundle.errors import BundleError
from crossmodal.bundle.image import ImageConfig, preprocess_images
from crossmodal.bundle.manifest import AUDIO_INPUT, IMAGE_INPUT, OUTPUT, TEXT_INPUT, TOWERS, Manifest
from crossmodal.bundle.tokenizer import TextTokenizer, load_tokenizer

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_PROVIDER_PREFERENCE = (CUDA, CPU)


def select_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Return the execution providers to use: ``requested`` as given, or CUDA then CPU where available.

    A requested provider that this onnxruntime build lacks is an error rather than a silent
    downgrade, so a GPU deployment that lost its CUDA libraries fails loudly at start.
    """
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in DEFAULT_PROVIDER_PREFERENCE if p in available]
    if not requested:
        raise BundleError("the execution provider list is empty")
    missing = [p for p in requested if p not in available]
    if missing:
        raise BundleError(f"execution providers {missing} are not available here (available: {available})")
    return list(requested)


def _session_options(
    intra_op_threads: int, inter_op_threads: int, precision: str, providers: list[str], spin: bool = False
) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if precision == "fp16" and providers[0] == CPU:
        # onnxruntime 1.31's CPU provider crashes the process (segfault) on these fp16 graphs at
        # ORT_ENABLE_ALL; fp16 is meant for CUDA, and this keeps it loadable on CPU for checks.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    # One log line per session is enough; onnxruntime's info-level chatter is not.
    opts.log_severity_level = 3
    # onnxruntime's intra-op threads spin-wait between operators by default: on a text tower that burnt
    # more CPU than the inference (1.0 vs 0.65 ms per call at batch 1 on 2 cores) and took it from the
    # other services sharing the node. Blocking costs no measurable latency here.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


def _read_verified(bundle_dir: Path, name: str, manifest: Manifest) -> bytes:
    path = bundle_dir / name
    entry = manifest.files.get(name)
    if entry is None:
        raise BundleError("the file has no checksum in model.json", path=str(path))
    if not path.is_file():
        raise BundleError("the file listed in model.json is missing", path=str(path))
    # The bytes that are hashed are the bytes that are loaded: no window to swap the file.
    data = path.read_bytes()
    if len(data) != entry.bytes:
        raise BundleError(f"size {len(data)} bytes differs from the manifest's {entry.bytes}", path=str(path))
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise BundleError(
            f"sha256 {digest} differs from the manifest's {entry.sha256}: the file is damaged or replaced",
            path=str(path),
        )
    return data


# Reports that may sit beside a bundle's model files (they describe it but are not loaded by it).
DOCUMENTATION_FILES = frozenset({"README.md", "QUALITY.md", "quality.json"})


def verify_bundle(path: str | Path) -> Manifest:
    """Check every file the manifest lists (presence, size, sha256) and that no unlisted file is present.

    The reports in DOCUMENTATION_FILES (the quality report of the default model) are allowed beside it.

    :meth:`ModelBundle.open` checks only the files it loads; this is the full check for CI and
    for publishing a bundle.
    """
    bundle_dir = Path(path)
    manifest = Manifest.load(bundle_dir)
    for name in sorted(manifest.files):
        _read_verified(bundle_dir, name, manifest)
    extra = sorted(
        p.name
        for p in bundle_dir.iterdir()
        if p.name not in manifest.files and p.name != "model.json" and p.name not in DOCUMENTATION_FILES
    )
    if extra:
        raise BundleError(f"files not listed in model.json: {extra}", path=str(bundle_dir))
    return manifest


def _dims(shape: Sequence[object]) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in shape]


def _check_tower(session: ort.InferenceSession, tower: str, manifest: Manifest, path: Path) -> None:
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    want_input = {"text": TEXT_INPUT, "image": IMAGE_INPUT, "audio": AUDIO_INPUT}[tower]
    if len(inputs) != 1 or inputs[0].name != want_input:
        raise BundleError(f"graph inputs {[i.name for i in inputs]} should be [{want_input!r}]", path=str(path))
    if not outputs or outputs[0].name != OUTPUT:
        raise BundleError(f"graph outputs {[o.name for o in outputs]} should start with {OUTPUT!r}", path=str(path))
    in_shape = _dims(inputs[0].shape)
    out_shape = _dims(outputs[0].shape)
    want_in: list[int | None]
    if tower == "text":
        want_in, want_type = [None, manifest.context_length], "tensor(int64)"
    elif tower == "image" and manifest.image is not None:
        want_in, want_type = [None, 3, manifest.image.height, manifest.image.width], "tensor(float)"
    elif tower == "audio" and manifest.audio is not None:
        want_in, want_type = [None, manifest.audio.frames, manifest.audio.n_mels], "tensor(float)"
    else:
        raise BundleError(f"the manifest describes no {tower} tower", path=str(path))
    if inputs[0].type != want_type:
        raise BundleError(f"input type {inputs[0].type} should be {want_type}", path=str(path))
    if len(in_shape) != len(want_in) or any(w is not None and d != w for d, w in zip(in_shape, want_in, strict=False)):
        raise BundleError(
            f"input shape {inputs[0].shape} disagrees with the manifest (expected [batch, "
            f"{', '.join(str(w) for w in want_in[1:])}])",
            path=str(path),
        )
    if len(out_shape) != 2 or out_shape[1] != manifest.embed_dim:
        raise BundleError(
            f"output shape {outputs[0].shape} disagrees with the manifest's embed_dim {manifest.embed_dim}",
            path=str(path),
        )
    if outputs[0].type != "tensor(float)":
        raise BundleError(f"output type {outputs[0].type} should be tensor(float)", path=str(path))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


class ModelBundle:
    """A verified model bundle with onnxruntime sessions for its towers; safe to call from many threads."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        tokenizer: TextTokenizer,
        sessions: dict[str, ort.InferenceSession],
        precision: str,
        providers: list[str],
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.precision = precision
        self.providers = providers
        self._sessions = sessions
        self._log_mel = LogMel(manifest.audio) if manifest.audio is not None else None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        precision: str = "fp32",
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        towers: Sequence[str] | None = None,
    ) -> ModelBundle:
        """Verify the bundle at ``path`` and load the requested towers (default: every tower it has).

        Raises :class:`BundleError` naming the offending file when the manifest is malformed, a
        file is missing, a checksum or size differs, or a graph's shapes disagree with the
        manifest. ``providers`` defaults to CUDA then CPU where available; onnxruntime's
        silent fallback to CPU is disabled. Thread counts of 0 let onnxruntime choose.
        """
        bundle_dir = Path(path)
        if not bundle_dir.is_dir():
            raise BundleError("the model bundle directory does not exist", path=str(bundle_dir))
        if towers is not None:
            unknown = [t for t in towers if t not in TOWERS]
            if unknown or not towers:
                raise BundleError(f"towers must be a non-empty subset of {TOWERS}, got {list(towers)}")
        manifest = Manifest.load(bundle_dir)
        towers = manifest.towers if towers is None else towers
        variant = manifest.variant(precision)
        chosen = select_providers(providers)

        tok_path = bundle_dir / manifest.tokenizer_file
        _read_verified(bundle_dir, manifest.tokenizer_file, manifest)
        tokenizer = load_tokenizer(tok_path, manifest.context_length, manifest.tokenizer_kind, manifest.pad_token)
        if tokenizer.vocab_size != manifest.vocab_size:
            raise BundleError(
                f"vocabulary of {tokenizer.vocab_size} tokens differs from the manifest's {manifest.vocab_size}",
                path=str(tok_path),
            )

        sessions: dict[str, ort.InferenceSession] = {}
        for tower in dict.fromkeys(towers):
            name = variant.file_for(tower)
            model_bytes = _read_verified(bundle_dir, name, manifest)
            opts = _session_options(intra_op_threads, inter_op_threads, precision, chosen)
            try:
                session = ort.InferenceSession(model_bytes, sess_options=opts, providers=chosen)
            except Exception as exc:  # onnxruntime raises its own exception types per failure
                raise BundleError(f"onnxruntime cannot load the graph ({exc})", path=str(bundle_dir / name)) from exc
            session.disable_fallback()
            active = session.get_providers()
            if active[0] != chosen[0]:
                raise BundleError(
                    f"onnxruntime started {active} instead of {chosen}; check the {chosen[0]} installation",
                    path=str(bundle_dir / name),
                )
            _check_tower(session, tower, manifest, bundle_dir / name)
            sessions[tower] = session
        log.info(
            "model bundle loaded: %s (%s, %s) from %s on %s",
            manifest.model_id,
            precision,
            ",".join(sessions),
            bundle_dir,
            chosen,
        )
        return cls(bundle_dir, manifest, tokenizer, sessions, precision, chosen)

    @property
    def model_id(self) -> str:
        """The model id every vector from this bundle carries."""
        return self.manifest.model_id

    @property
    def embed_dim(self) -> int:
        """Embedding dimension."""
        return self.manifest.embed_dim

    @property
    def image_config(self) -> ImageConfig:
        """How images must be preprocessed for this model."""
        if self.manifest.image is None:
            raise BundleError("the bundle has no image tower", path=str(self.path))
        return self.manifest.image

    @property
    def audio_config(self) -> AudioConfig:
        """How sounds must be turned into features for this model."""
        if self.manifest.audio is None:
            raise BundleError("the bundle has no audio tower", path=str(self.path))
        return self.manifest.audio

    @property
    def towers(self) -> tuple[str, ...]:
        """The towers this instance loaded."""
        return tuple(self._sessions)

    def _session(self, tower: str) -> ort.InferenceSession:
        try:
            return self._sessions[tower]
        except KeyError:
            raise BundleError(f"the {tower} tower was not loaded (towers={list(self._sessions)})") from None

    def encode_text_ids(self, ids: np.ndarray) -> np.ndarray:
        """Run the text tower on token ids (n, context_length) and return L2-normalised float32 (n, dim)."""
        session = self._session("text")
        ids = np.asarray(ids)
        ctx = self.manifest.context_length
        if ids.ndim != 2 or ids.shape[1] != ctx:
            raise ValueError(f"token ids must have shape (n, {ctx}), got {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got {ids.dtype}")
        if ids.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if ids.min() < 0 or ids.max() >= self.manifest.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.manifest.vocab_size})")
        out = session.run([OUTPUT], {TEXT_INPUT: np.ascontiguousarray(ids, dtype=np.int64)})[0]
        return l2_normalize(out)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Run the image tower on preprocessed pixels (n, 3, H, W); returns L2-normalised float32 (n, dim)."""
        session = self._session("image")
        pixels = np.asarray(pixels)
        want = (3, self.image_config.height, self.image_config.width)
        if pixels.ndim != 4 or pixels.shape[1:] != want:
            raise ValueError(f"pixels must have shape (n, {want[0]}, {want[1]}, {want[2]}), got {pixels.shape}")
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = session.run([OUTPUT], {IMAGE_INPUT: np.ascontiguousarray(pixels, dtype=np.float32)})[0]
        return l2_normalize(out)

    def encode_audio_features(self, features: np.ndarray) -> np.ndarray:
        """Run the audio tower on log-mel features (n, frames, n_mels); returns L2-normalised float32 (n, dim)."""
        session = self._session("audio")
        features = np.asarray(features)
        want = (self.audio_config.frames, self.audio_config.n_mels)
        if features.ndim != 3 or features.shape[1:] != want:
            raise ValueError(f"features must have shape (n, {want[0]}, {want[1]}), got {features.shape}")
        if features.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = session.run([OUTPUT], {AUDIO_INPUT: np.ascontiguousarray(features, dtype=np.float32)})[0]
        return l2_normalize(out)

    def encode_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Encode mono clips at the tower's rate (each fitted to the clip length); returns float32 (n, dim)."""
        config = self.audio_config
        log_mel = self._log_mel or LogMel(config)
        features = np.zeros((len(clips), config.frames, config.n_mels), dtype=np.float32)
        for row, clip in enumerate(clips):
            features[row] = log_mel(fit_clip(np.asarray(clip, dtype=np.float32), config))
        return self.encode_audio_features(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Tokenize and encode texts; returns L2-normalised float32 (n, dim)."""
        ids, _ = self.tokenizer.encode_batch(list(texts))
        return self.encode_text_ids(ids)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and encode PIL images; returns L2-normalised float32 (n, dim)."""
        return self.encode_pixels(preprocess_images(list(images), self.image_config))
