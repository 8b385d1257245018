"""The CLAP exporter: a transformers ClapModel (random weights, offline) to a text + audio bundle, checked
against transformers itself: its tokenizer's ids, its feature extractor's log-mel and its PyTorch towers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossmodal.bundle import Manifest, ModelBundle
from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip
from tests.bundle.conftest import corpus_texts

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from crossmodal.export import ExportError, export_clap_bundle, load_clap_model  # noqa: E402
from crossmodal.export import clap as clap_module  # noqa: E402

# A reduced clap-htsat-unfused: same layout (RoBERTa text model, 4-stage HTSAT over the 1001x64 log-mel
# folded to 256x256, no fusion), a fraction of the widths and depths, so that an export takes seconds.
TINY_CLAP: dict[str, Any] = {
    "text_config": {
        "vocab_size": 1000,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 80,
    },
    "audio_config": {
        "hidden_size": 64,
        "patch_embeds_hidden_size": 8,
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 1, 2, 2],
    },
    "projection_dim": 32,
}
# RoBERTa's own special tokens written in texts: the tokenizer must map them as transformers does.
SPECIAL_TEXTS = ["<s>", "a </s> b", "<mask> dog", "x<unk>y", "</s></s>"]


@dataclass(frozen=True)
class ClapExport:
    """A tiny CLAP bundle on disk, the loaded model it came from and the transformers tokenizer of its file."""

    bundle: Path
    loaded: Any
    manifest: Manifest
    hf_tokenizer: Any


def _sounds(rate: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(3 * rate) / rate
    long_t = np.arange(10 * rate) / rate
    return [
        (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * (200 * long_t + 600 * long_t**2))).astype(np.float32),
        (0.1 * rng.standard_normal(rate // 2)).astype(np.float32),
        (0.4 * np.sin(2 * np.pi * 3_000 * long_t) * (np.sin(2 * np.pi * 2 * long_t) > 0)).astype(np.float32),
        np.zeros(rate, dtype=np.float32),
    ]


def _tokenizer_at(bundle: Path, length: int) -> Any:
    """The bundle's tokenizer file at another context length (to exercise truncation on most texts)."""
    from crossmodal.bundle.tokenizer import load_tokenizer

    return load_tokenizer(bundle / "tokenizer.json", length, "huggingface", "<pad>")


def _transformers_features(extractor: Any, sounds: list[np.ndarray]) -> np.ndarray:
    """ClapFeatureExtractor's input_features for sounds up to a clip long: (n, frames, n_mels)."""
    out = extractor(sounds, sampling_rate=extractor.sampling_rate, return_tensors="np")
    return np.asarray(out["input_features"], dtype=np.float32)[:, 0]


@pytest.fixture(scope="module")
def clap_export(tmp_path_factory: pytest.TempPathFactory) -> ClapExport:
    """The tiny CLAP with a BPE vocabulary trained on the corpus, exported with fp32 and int8."""
    from transformers import RobertaTokenizerFast

    root = tmp_path_factory.mktemp("clap")
    tok_file = root / "tokenizer.json"
    clap_module.train_roberta_tokenizer(corpus_texts(), vocab_size=800).save(str(tok_file))
    config = root / "tiny_clap.json"
    config.write_text(json.dumps(TINY_CLAP))
    loaded = load_clap_model(model_config=config, seed=0)
    manifest = export_clap_bundle(loaded, root / "bundle", tokenizer_json=tok_file, precisions=("fp32", "int8"))
    return ClapExport(root / "bundle", loaded, manifest, RobertaTokenizerFast(tokenizer_file=str(tok_file)))


def test_bundle_records_the_clap_feature_extractor_and_tokenizer(clap_export: ClapExport) -> None:
    manifest = Manifest.load(clap_export.bundle)
    assert manifest.towers == ("text", "audio") and manifest.image is None
    assert manifest.embed_dim == 32 and manifest.context_length == 77
    assert (manifest.tokenizer_kind, manifest.pad_token) == ("huggingface", "<pad>")
    assert manifest.audio == AudioConfig(
        sample_rate=48_000,
        clip_seconds=10.0,
        window_hop_seconds=5.0,
        short="repeatpad",
        n_fft=1024,
        hop_length=480,
        win_length=1024,
        n_mels=64,
        f_min=50.0,
        f_max=14_000.0,
        mel_scale="slaney",
        mel_norm="slaney",
        log="db",
        top_db=None,
    )
    fp32 = manifest.variant("fp32")
    assert fp32.files == {"text": "text.onnx", "audio": "audio.onnx"}
    assert min(s["min"] for s in fp32.cosine_to_torch.values()) >= 0.9999
    assert manifest.variant("int8").cosine_to_fp32["audio"]["min"] >= 0.99
    assert manifest.exporter["family"] == "clap" and manifest.source["kind"] == "random"
    assert sorted(p.name for p in clap_export.bundle.iterdir()) == sorted([*manifest.files, "model.json"])


def test_log_mel_equals_the_clap_feature_extractor(clap_export: ClapExport) -> None:
    extractor = clap_export.loaded.feature_extractor
    config = clap_export.manifest.audio
    assert config is not None
    sounds = _sounds(config.sample_rate)
    ours = np.stack([LogMel(config)(fit_clip(s, config)) for s in sounds])
    theirs = _transformers_features(extractor, sounds)
    assert ours.shape == theirs.shape == (len(sounds), 1001, 64)
    assert float(np.abs(ours - theirs).max()) <= 1e-4


def test_tokenizer_ids_equal_transformers_on_the_corpus(clap_export: ClapExport) -> None:
    texts = corpus_texts() + SPECIAL_TEXTS
    assert len(texts) >= 242
    bundle = ModelBundle.open(clap_export.bundle, towers=("text",))
    for length, tokenizer in [(77, bundle.tokenizer), (12, _tokenizer_at(clap_export.bundle, 12))]:
        ours, truncated = tokenizer.encode_batch(texts)
        theirs = clap_export.hf_tokenizer(texts, padding="max_length", truncation=True, max_length=length)
        assert ours.tolist() == theirs["input_ids"], length
        assert any(truncated)


def test_bundle_encodes_like_transformers_end_to_end(clap_export: ClapExport) -> None:
    """Raw texts and sounds through the bundle (numpy front end + ONNX) against transformers' tokenizer,
    feature extractor and PyTorch model."""
    model = clap_export.loaded.model
    bundle = ModelBundle.open(clap_export.bundle, providers=["CPUExecutionProvider"])
    texts = corpus_texts()
    batch = clap_export.hf_tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    sounds = _sounds(bundle.audio_config.sample_rate)
    features = _transformers_features(clap_export.loaded.feature_extractor, sounds)
    with torch.no_grad():
        ref_text = model.get_text_features(**batch).pooler_output.numpy()
        ref_audio = model.get_audio_features(input_features=torch.from_numpy(features)[:, None]).pooler_output.numpy()
    text_cos = (bundle.encode_texts(texts) * ref_text).sum(axis=1)
    audio_cos = (bundle.encode_clips(sounds) * ref_audio).sum(axis=1)
    assert float(text_cos.min()) >= 0.9999, text_cos.min()
    assert float(audio_cos.min()) >= 0.9999, audio_cos
    # Distinct inputs give distinct embeddings (a tower that ignored its input would pass the above).
    assert float((ref_audio[0] * ref_audio[1]).sum()) < 0.9999


def test_export_refuses_towers_that_disagree_with_pytorch(
    clap_export: ClapExport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class UnmaskedText(clap_module._TextTower):
        def forward(self, input_ids: Any) -> Any:
            # Attends to padding: what a graph built without the in-graph mask would do.
            pooled = self.model.text_model(input_ids=input_ids).pooler_output
            return self.model.text_projection(pooled)

    monkeypatch.setattr(clap_module, "_TextTower", UnmaskedText)
    with pytest.raises(ExportError, match="disagree with PyTorch"):
        export_clap_bundle(clap_export.loaded, tmp_path / "b", tokenizer_json=clap_export.bundle / "tokenizer.json")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_fused_models_and_mismatched_tokenizers(clap_export: ClapExport, tmp_path: Path) -> None:
    from transformers import ClapFeatureExtractor

    loaded = clap_export.loaded
    fused = clap_module.LoadedClap(
        loaded.model, ClapFeatureExtractor(truncation="fusion"), None, loaded.source, loaded.model_id
    )
    with pytest.raises(ExportError, match="fused CLAP models"):
        export_clap_bundle(fused, tmp_path / "fused")
    # A tokenizer whose pad id is not the text model's: position ids would be wrong.
    swapped = json.loads((clap_export.bundle / "tokenizer.json").read_text())
    swapped["added_tokens"] = [{**t, "id": {0: 1, 1: 0}.get(t["id"], t["id"])} for t in swapped["added_tokens"]]
    vocab = swapped["model"]["vocab"]
    vocab["<s>"], vocab["<pad>"] = vocab["<pad>"], vocab["<s>"]
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    with pytest.raises(ExportError, match="pads with id 0 but the text model's pad_token_id is 1"):
        export_clap_bundle(loaded, tmp_path / "swapped", tokenizer_json=tmp_path / "swapped.json")
    with pytest.raises(ExportError, match="context_length must be 2..78"):
        export_clap_bundle(loaded, tmp_path / "long", context_length=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swapped.json"]


def test_cli_exports_a_clap_bundle_and_explains_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossmodal.cli import main

    config = tmp_path / "tiny_clap.json"
    config.write_text(json.dumps(TINY_CLAP))
    out = tmp_path / "cli-bundle"
    args = ["export-model", str(out), "--family", "clap", "--model-config", str(config), "--context-length", "32"]
    assert main([*args, "--seed", "3", "--model-id", "tiny-clap", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_id"] == "tiny-clap" and summary["towers"] == ["text", "audio"]
    assert summary["variants"]["fp32"]["cosine_to_torch"]["audio"]["min"] >= 0.9999
    bundle = ModelBundle.open(out)
    assert bundle.manifest.context_length == 32 and bundle.manifest.source["seed"] == 3
    assert bundle.encode_texts(["a dog barking"]).shape == bundle.encode_clips([np.zeros(4_800)]).shape == (1, 32)

    assert main(["export-model", str(tmp_path / "a"), "--family", "clap", "--arch", "ViT-B-32"]) == 2
    assert "--arch names open_clip architectures" in capsys.readouterr().err
    # No network here; the hub client is told so (it reads HF_HUB_OFFLINE once, at import) so that it fails
    # at once instead of after connection timeouts. The message says what to do instead.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub = ["--pretrained", "laion/clap-htsat-unfused", "--cache-dir", str(tmp_path / "hub")]
    code = main(["export-model", str(tmp_path / "b"), "--family", "clap", *hub])
    assert code == 1
    err = capsys.readouterr().err
    assert "could not get 'laion/clap-htsat-unfused' from the model hub" in err and "--checkpoint" in err
    assert not (tmp_path / "b").exists()


def test_a_save_pretrained_folder_is_loaded_as_a_checkpoint(clap_export: ClapExport, tmp_path: Path) -> None:
    from transformers import ClapProcessor

    folder = tmp_path / "saved"
    clap_export.loaded.model.save_pretrained(folder)
    extractor, tokenizer = clap_export.loaded.feature_extractor, clap_export.hf_tokenizer
    processor = ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    processor.save_pretrained(folder)
    loaded = load_clap_model(checkpoint=folder, seed=5)  # the seed must not matter: the weights are read
    assert loaded.source["kind"] == "checkpoint" and loaded.model_id.startswith("clap@")
    assert loaded.tokenizer_json is not None
    for key, value in clap_export.loaded.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
    with pytest.raises(ExportError, match="not a directory"):
        load_clap_model(checkpoint=tmp_path / "missing")


@pytest.mark.slow
def test_full_size_clap_htsat_unfused_export(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The laion/clap-htsat-unfused architecture with random weights: ~1-2 minutes and ~620 MB; -m slow."""
    import time

    loaded = load_clap_model(seed=0)
    out = tmp_path_factory.mktemp("clap-full") / "bundle"
    started = time.perf_counter()
    manifest = export_clap_bundle(loaded, out, precisions=("fp32", "int8"))
    seconds = time.perf_counter() - started
    sizes = {name: round(entry.bytes / 1e6, 1) for name, entry in manifest.files.items()}
    print(f"clap-htsat-unfused export: {seconds:.0f} s, files (MB) {sizes}")
    print(f"cosine to torch {manifest.variant('fp32').cosine_to_torch}")
    print(f"int8 cosine to fp32 {manifest.variant('int8').cosine_to_fp32}")
    assert manifest.embed_dim == 512 and manifest.audio is not None and manifest.audio.frames == 1001
    assert min(s["min"] for s in manifest.variant("fp32").cosine_to_torch.values()) >= 0.9999
    bundle = ModelBundle.open(out)
    assert np.isfinite(bundle.encode_clips(_sounds(48_000)[:2])).all()
