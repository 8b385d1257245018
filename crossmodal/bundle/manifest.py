"""The bundle manifest, ``model.json``: what the model is, how to feed it, and the checksum of every file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal.bundle.audio import AudioConfig
from crossmodal.bundle.errors import BundleError
from crossmodal.bundle.image import ImageConfig
from crossmodal.bundle.tokenizer import TOKENIZER_KINDS

MANIFEST_FILE = "model.json"
FORMAT_VERSION = 1
# A bundle has the text tower and at least one of the others, all in one embedding space.
TOWERS = ("text", "image", "audio")
PRECISIONS = ("fp32", "fp16", "int8")
TEXT_INPUT = "input_ids"
IMAGE_INPUT = "pixels"
AUDIO_INPUT = "features"
OUTPUT = "embedding"
IO_NAMES = {"text_input": TEXT_INPUT, "image_input": IMAGE_INPUT, "audio_input": AUDIO_INPUT, "output": OUTPUT}
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle with its checksum and size."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Variant:
    """One precision of the bundle's towers: their files and how close they come to fp32."""

    precision: str
    text: str
    image: str | None = None
    audio: str | None = None
    # Per tower: {"mean": ..., "min": ...} cosine between this variant's and fp32's embeddings.
    cosine_to_fp32: dict[str, dict[str, float]] = field(default_factory=dict)
    # Cosine of the fp32 ONNX towers to the PyTorch model they came from (fp32 only).
    cosine_to_torch: dict[str, dict[str, float]] = field(default_factory=dict)
    target: str = "any"

    @property
    def files(self) -> dict[str, str]:
        """The file of each tower this variant has."""
        named = {"text": self.text, "image": self.image, "audio": self.audio}
        return {tower: name for tower, name in named.items() if name is not None}

    def file_for(self, tower: str) -> str:
        """Return the file name of ``tower`` ("text", "image" or "audio") in this variant."""
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
        name = self.files.get(tower)
        if name is None:
            raise BundleError(f"the bundle has no {tower} tower", path=MANIFEST_FILE)
        return name

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        out: dict[str, Any] = {**self.files, "target": self.target}
        if self.cosine_to_fp32:
            out["cosine_to_fp32"] = self.cosine_to_fp32
        if self.cosine_to_torch:
            out["cosine_to_torch"] = self.cosine_to_torch
        return out


@dataclass(frozen=True)
class Manifest:
    """Everything ``model.json`` promises about a bundle."""

    model_id: str
    embed_dim: int
    context_length: int
    vocab_size: int
    image: ImageConfig | None
    files: dict[str, FileEntry]
    variants: dict[str, Variant]
    tokenizer_file: str = "tokenizer.json"
    # "clip" (CLIP's BPE, ids identical to open_clip's) or "huggingface" (any tokenizer.json, its pad token).
    tokenizer_kind: str = "clip"
    pad_token: str | None = None
    audio: AudioConfig | None = None
    logit_scale: float | None = None
    exporter: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def towers(self) -> tuple[str, ...]:
        """The towers the bundle has: text, then image and/or audio."""
        return tuple(t for t, present in (("text", True), ("image", self.image), ("audio", self.audio)) if present)

    @property
    def image_size(self) -> tuple[int, int]:
        """The image tower's input (height, width)."""
        if self.image is None:
            raise BundleError("the bundle has no image tower", path=MANIFEST_FILE)
        return self.image.size

    def variant(self, precision: str) -> Variant:
        """Return the variant for ``precision`` or raise :class:`BundleError` listing those present."""
        try:
            return self.variants[precision]
        except KeyError:
            raise BundleError(
                f"the bundle has no {precision!r} variant (it has {sorted(self.variants)})",
                path=MANIFEST_FILE,
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to ``model.json``."""
        return {
            "format_version": self.format_version,
            "model_id": self.model_id,
            "embed_dim": self.embed_dim,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "logit_scale": self.logit_scale,
            **({"image": self.image.to_dict()} if self.image else {}),
            **({"audio": self.audio.to_dict()} if self.audio else {}),
            "tokenizer": self._tokenizer_dict(),
            "io": self._io_names(),
            "variants": {name: v.to_dict() for name, v in self.variants.items()},
            "files": {name: f.to_dict() for name, f in sorted(self.files.items())},
            "exporter": self.exporter,
            "source": self.source,
        }

    def _tokenizer_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.tokenizer_file}
        # Bundles of CLIP models keep the manifest they always had.
        if self.tokenizer_kind != "clip":
            out["kind"] = self.tokenizer_kind
        if self.pad_token is not None:
            out["pad_token"] = self.pad_token
        return out

    def _io_names(self) -> dict[str, str]:
        inputs = {"text": "text_input", "image": "image_input", "audio": "audio_input"}
        keep = {inputs[t] for t in self.towers} | {"output"}
        return {key: name for key, name in IO_NAMES.items() if key in keep}

    def write(self, bundle_dir: Path) -> Path:
        """Write ``model.json`` into ``bundle_dir`` and return its path."""
        path = bundle_dir / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse and check the JSON form; raise :class:`BundleError` naming the bad field."""
        try:
            version = int(data.get("format_version", 0))
            if version != FORMAT_VERSION:
                raise BundleError(
                    f"format_version {version} is not supported (this build reads {FORMAT_VERSION})",
                    path=MANIFEST_FILE,
                )
            io_names = data.get("io", {})
            wrong = {key: name for key, name in io_names.items() if IO_NAMES.get(key) != name}
            if wrong:
                raise BundleError(f"io names {wrong} differ from {IO_NAMES}", path=MANIFEST_FILE)
            tokenizer = dict(data.get("tokenizer", {}))
            files = {
                str(name): FileEntry(sha256=str(f["sha256"]), bytes=int(f["bytes"]))
                for name, f in data["files"].items()
            }
            variants = {
                str(name): Variant(
                    precision=str(name),
                    text=str(v["text"]),
                    image=None if v.get("image") is None else str(v["image"]),
                    audio=None if v.get("audio") is None else str(v["audio"]),
                    cosine_to_fp32=dict(v.get("cosine_to_fp32", {})),
                    cosine_to_torch=dict(v.get("cosine_to_torch", {})),
                    target=str(v.get("target", "any")),
                )
                for name, v in data["variants"].items()
            }
            manifest = cls(
                model_id=str(data["model_id"]),
                embed_dim=int(data["embed_dim"]),
                context_length=int(data["context_length"]),
                vocab_size=int(data["vocab_size"]),
                image=ImageConfig.from_dict(data["image"]) if data.get("image") is not None else None,
                audio=AudioConfig.from_dict(data["audio"]) if data.get("audio") is not None else None,
                files=files,
                variants=variants,
                tokenizer_file=str(tokenizer.get("file", "tokenizer.json")),
                tokenizer_kind=str(tokenizer.get("kind", "clip")),
                pad_token=None if tokenizer.get("pad_token") is None else str(tokenizer["pad_token"]),
                logit_scale=None if data.get("logit_scale") is None else float(data["logit_scale"]),
                exporter=dict(data.get("exporter", {})),
                source=dict(data.get("source", {})),
                format_version=version,
            )
        except BundleError:
            raise
        except KeyError as exc:
            raise BundleError(f"required field {exc.args[0]!r} is missing", path=MANIFEST_FILE) from exc
        except (TypeError, ValueError, AttributeError, AssertionError) as exc:
            raise BundleError(f"malformed manifest ({exc})", path=MANIFEST_FILE) from exc
        manifest.check()
        return manifest

    def check(self) -> None:
        """Check internal consistency: sizes positive, every referenced file listed with a checksum."""
        if not self.model_id:
            raise BundleError("model_id is empty", path=MANIFEST_FILE)
        if self.embed_dim < 1 or self.context_length < 2 or self.vocab_size < 1:
            raise BundleError(
                "embed_dim, context_length and vocab_size must be positive "
                f"(got {self.embed_dim}, {self.context_length}, {self.vocab_size})",
                path=MANIFEST_FILE,
            )
        if "fp32" not in self.variants:
            raise BundleError("the fp32 variant is missing", path=MANIFEST_FILE)
        if len(self.towers) < 2:
            raise BundleError("a bundle needs an image or an audio tower beside the text tower", path=MANIFEST_FILE)
        if self.tokenizer_kind not in TOKENIZER_KINDS:
            raise BundleError(
                f"tokenizer kind {self.tokenizer_kind!r} is not one of {TOKENIZER_KINDS}", path=MANIFEST_FILE
            )
        for variant in self.variants.values():
            if tuple(variant.files) != self.towers:
                raise BundleError(
                    f"variant {variant.precision!r} has towers {list(variant.files)}, the bundle {list(self.towers)}",
                    path=MANIFEST_FILE,
                )
        referenced = [self.tokenizer_file] + [f for v in self.variants.values() for f in v.files.values()]
        for name in referenced:
            if name not in self.files:
                raise BundleError(f"{name} is used but has no checksum in 'files'", path=MANIFEST_FILE)
            if Path(name).name != name or name.startswith("."):
                raise BundleError(f"file name {name!r} must be a plain name inside the bundle", path=MANIFEST_FILE)
        for name, entry in self.files.items():
            if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256):
                raise BundleError(f"sha256 of {name} is not 64 hex digits", path=MANIFEST_FILE)

    @classmethod
    def load(cls, bundle_dir: str | Path) -> Manifest:
        """Read and check ``model.json`` from a bundle directory."""
        path = Path(bundle_dir) / MANIFEST_FILE
        if not path.is_file():
            raise BundleError("the manifest is missing: not a model bundle directory", path=str(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"cannot read the manifest ({exc})", path=str(path)) from exc
        if not isinstance(data, dict):
            raise BundleError("the manifest is not a JSON object", path=str(path))
        return cls.from_dict(data)
