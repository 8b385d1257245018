"""Model bundles: manifest, verified onnxruntime loader, tokenizers, image and audio preprocessing (no torch)."""

from crossmodal.bundle.audio import AudioConfig, AudioInputError, decode_audio
from crossmodal.bundle.errors import BundleError
from crossmodal.bundle.image import (
    ImageConfig,
    ImageInputError,
    decode_image,
    preprocess_image,
    preprocess_images,
)
from crossmodal.bundle.loader import ModelBundle, l2_normalize, select_providers, verify_bundle
from crossmodal.bundle.manifest import MANIFEST_FILE, FileEntry, Manifest, Variant, sha256_file
from crossmodal.bundle.tokenizer import (
    ClipTokenizer,
    HfTokenizer,
    build_tokenizer,
    load_tokenizer,
    read_bpe_merges,
    write_tokenizer_json,
)

__all__ = [
    "MANIFEST_FILE",
    "AudioConfig",
    "AudioInputError",
    "BundleError",
    "ClipTokenizer",
    "FileEntry",
    "HfTokenizer",
    "ImageConfig",
    "ImageInputError",
    "Manifest",
    "ModelBundle",
    "Variant",
    "build_tokenizer",
    "decode_audio",
    "decode_image",
    "l2_normalize",
    "load_tokenizer",
    "preprocess_image",
    "preprocess_images",
    "read_bpe_merges",
    "select_providers",
    "sha256_file",
    "verify_bundle",
    "write_tokenizer_json",
]
