"""The bundle manifest, ``model.json``: what the model is, how to feed it, and the checksum of every file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal.bundle.errors import BundleError
from crossmodal.bundle.image import ImageConfig

MANIFEST_FILE = "model.json"
FORMAT_VERSION = 1
TOWERS = ("text", "image")
PRECISIONS = ("fp32", "fp16", "int8")
TEXT_INPUT = "input_ids"
IMAGE_INPUT = "pixels"
OUTPUT = "embedding"
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
    """One precision of the two towers: their files and how close they come to fp32."""

    precision: str
    text: str
    image: str
    # Per tower: {"mean": ..., "min": ...} cosine between this variant's and fp32's embeddings.
    cosine_to_fp32: dict[str, dict[str, float]] = field(default_factory=dict)
    # Cosine of the fp32 ONNX towers to the PyTorch model they came from (fp32 only).
    cosine_to_torch: dict[str, dict[str, float]] = field(default_factory=dict)
    target: str = "any"

    def file_for(self, tower: str) -> str:
        """Return the file name of ``tower`` ("text" or "image") in this variant."""
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
        return self.text if tower == "text" else self.image

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        out: dict[str, Any] = {"text": self.text, "image": self.image, "target": self.target}
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
    image: ImageConfig
    files: dict[str, FileEntry]
    variants: dict[str, Variant]
    tokenizer_file: str = "tokenizer.json"
    logit_scale: float | None = None
    exporter: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def image_size(self) -> tuple[int, int]:
        """The image tower's input (height, width)."""
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
            "image": self.image.to_dict(),
            "tokenizer": {"file": self.tokenizer_file},
            "io": {"text_input": TEXT_INPUT, "image_input": IMAGE_INPUT, "output": OUTPUT},
            "variants": {name: v.to_dict() for name, v in self.variants.items()},
            "files": {name: f.to_dict() for name, f in sorted(self.files.items())},
            "exporter": self.exporter,
            "source": self.source,
        }

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
            expected_io = {"text_input": TEXT_INPUT, "image_input": IMAGE_INPUT, "output": OUTPUT}
            if io_names and io_names != expected_io:
                raise BundleError(f"io names {io_names} differ from {expected_io}", path=MANIFEST_FILE)
            files = {
                str(name): FileEntry(sha256=str(f["sha256"]), bytes=int(f["bytes"]))
                for name, f in data["files"].items()
            }
            variants = {
                str(name): Variant(
                    precision=str(name),
                    text=str(v["text"]),
                    image=str(v["image"]),
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
                image=ImageConfig.from_dict(data["image"]),
                files=files,
                variants=variants,
                tokenizer_file=str(data.get("tokenizer", {}).get("file", "tokenizer.json")),
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
        referenced = [self.tokenizer_file] + [f for v in self.variants.values() for f in (v.text, v.image)]
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
