"""Shared fixtures: model bundles exported once per test session from small open_clip models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
TINY_CONFIG = DATA / "tiny_clip.json"
CORPUS = DATA / "tokenizer_corpus.json"


@dataclass(frozen=True)
class ExportedModel:
    """A bundle on disk together with the PyTorch model it was exported from."""

    bundle: Path
    model: Any
    manifest: Any


def corpus_texts() -> list[str]:
    """Return the checked-in tokenizer parity corpus."""
    return list(json.loads(CORPUS.read_text(encoding="utf-8"))["texts"])


def _export(out: Path, precisions: tuple[str, ...], **load_kwargs: Any) -> ExportedModel:
    pytest.importorskip("torch")
    from crossmodal.export import export_bundle, load_open_clip_model

    loaded = load_open_clip_model(**load_kwargs)
    manifest = export_bundle(
        loaded.model,
        out,
        model_id=loaded.model_id,
        context_length=loaded.context_length,
        source=loaded.source,
        precisions=precisions,
    )
    return ExportedModel(bundle=out, model=loaded.model, manifest=manifest)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """A tiny random-weight CLIP (full vocabulary, 32 px images) exported with all three precisions."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return _export(out, ("fp32", "fp16", "int8"), model_config=TINY_CONFIG, seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_export: ExportedModel) -> Path:
    """Path of the tiny bundle (treat as read-only; copy it to damage it)."""
    return tiny_export.bundle
