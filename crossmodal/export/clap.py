"""Turn a Hugging Face ``transformers`` CLAP model (``ClapModel``) into a text + audio model bundle.

The bundle holds ``text.onnx`` (RoBERTa text model + text projection; input ``input_ids`` only, the attention
mask is computed inside the graph from the pad id), ``audio.onnx`` (HTSAT audio model + audio projection; input
``features`` [batch, frames, n_mels], given the channel axis HTSAT wants inside the graph), the model's
``tokenizer.json`` (byte-level BPE, ``tokenizer.kind = "huggingface"``) and ``model.json`` whose ``audio``
section is the model's ``ClapFeatureExtractor`` settings, so that serving computes the same log-mel features in
numpy (crossmodal.bundle.audio) that transformers computes. Both towers return projected, unnormalised
embeddings, as the open_clip exporter's do.

Only unfused CLAP models are supported (``audio_config.enable_fusion = False``, feature extractor truncation
``rand_trunc``, e.g. ``laion/clap-htsat-unfused``): fused models take four mel views per clip (one of them a
resized whole-sound spectrogram) and an ``is_longer`` flag, which a one-input bundle tower cannot express.

Random weights (neither a pretrained name nor a checkpoint) build the laion/clap-htsat-unfused architecture
from :data:`CLAP_HTSAT_UNFUSED` with a small byte-level BPE vocabulary trained on the probe captions: useful
for tests and benchmarks only.
"""

from __future__ import annotations

import json
import shutil
import types
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import crossmodal
from crossmodal.bundle.audio import AudioConfig, LogMel, fit_clip
from crossmodal.bundle.errors import BundleError
from crossmodal.bundle.manifest import AUDIO_INPUT, PRECISIONS, TEXT_INPUT, FileEntry, Manifest, Variant, sha256_file
from crossmodal.bundle.probes import cosine_stats, probe_texts
from crossmodal.bundle.tokenizer import HfTokenizer
from crossmodal.export._torch_compat import import_open_clip
from crossmodal.export.exporter import (
    EXPORTER_NAME,
    N_PROBE_TEXTS,
    OPSET,
    PRECISION_TARGETS,
    TOKENIZER_FILE,
    ExportError,
    Progress,
    _export_onnx,
    _prepare_dir,
    _run_onnx,
    _write_verified,
)
from crossmodal.export.precision import convert_fp16, quantize_int8

# The laion/clap-htsat-unfused architecture. Its config.json on the model hub sets no architecture field
# beyond transformers' ClapConfig defaults (it lists projection_dim 512, projection_hidden_act "relu",
# logit_scale_init_value 1/0.07 and hidden_size 768, all defaults), so these are ClapTextConfig /
# ClapAudioConfig's defaults written out, to keep random-weight exports fixed if transformers' defaults move.
CLAP_HTSAT_UNFUSED: dict[str, Any] = {
    # RoBERTa-base text tower.
    "text_config": {
        "vocab_size": 50265,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    },
    # HTSAT (Swin transformer over a 256x256 "image" folded from the 1001x64 log-mel), no fusion.
    "audio_config": {
        "num_mel_bins": 64,
        "spec_size": 256,
        "window_size": 8,
        "patch_size": 4,
        "patch_stride": [4, 4],
        "hidden_size": 768,
        "patch_embeds_hidden_size": 96,
        "depths": [2, 2, 6, 2],
        "num_attention_heads": [4, 8, 16, 32],
        "enable_fusion": False,
    },
    "projection_dim": 512,
    "projection_hidden_act": "relu",
    "logit_scale_init_value": 1 / 0.07,
}
# The model's preprocessor_config.json (ClapFeatureExtractor): 48 kHz, 10 s clips, 1024-point FFT with hop
# 480 (1001 frames), 64 Slaney mels over 50-14000 Hz in dB without top_db, short sounds tiled then padded,
# long ones cut at random ("rand_trunc"; the bundle cuts them into windows instead).
CLAP_HTSAT_UNFUSED_FEATURES: dict[str, Any] = {
    "feature_size": 64,
    "sampling_rate": 48_000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "top_db": None,
    "truncation": "rand_trunc",
    "padding": "repeatpad",
}
PRETRAINED_EXAMPLE = "laion/clap-htsat-unfused"
# LAION's CLAP trained its RoBERTa tower on captions tokenized to 77 tokens.
DEFAULT_CONTEXT_LENGTH = 77
PAD_TOKEN = "<pad>"
# RoBERTa's special tokens in its id order (<s>=0, <pad>=1, </s>=2, <unk>=3), <mask> last.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
RANDOM_VOCAB_SIZE = 1000
# The ONNX graphs must match PyTorch at least this closely on every probe, or the export is refused.
COSINE_FLOOR = 0.9999
N_PROBE_SOUNDS = 12


def import_transformers() -> types.ModuleType:
    """Import and return ``transformers`` (the export extra), with torchvision's ops declared first."""
    # transformers imports torchvision, whose PyPI wheel fails beside the CPU torch build unless its op
    # schemas are declared; import_open_clip does exactly that (and open_clip is in the same extra).
    import_open_clip()
    try:
        import transformers
    except ImportError as exc:
        raise ExportError(f"the CLAP exporter needs transformers (the `export` extra): {exc}") from exc
    return transformers


@dataclass(frozen=True)
class LoadedClap:
    """A CLAP model ready to export: the model, its feature extractor and tokenizer, and where it came from."""

    model: nn.Module
    feature_extractor: Any
    # The model's tokenizer.json as text, or None for random weights (the exporter builds a small one).
    tokenizer_json: str | None
    source: dict[str, Any]
    model_id: str


def clap_config(overrides: dict[str, Any] | None = None) -> Any:
    """A ``ClapConfig`` of the laion/clap-htsat-unfused architecture, with ``overrides`` merged per section."""
    transformers = import_transformers()
    merged: dict[str, Any] = json.loads(json.dumps(CLAP_HTSAT_UNFUSED))
    for key, value in (overrides or {}).items():
        if key in ("text_config", "audio_config"):
            if not isinstance(value, dict):
                raise ExportError(f"{key} must be a JSON object of Clap{key[:-7].title()}Config fields")
            merged[key].update(value)
        else:
            merged[key] = value
    try:
        return transformers.ClapConfig(**merged)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"not a valid CLAP configuration ({exc})") from exc


def load_clap_model(
    *,
    pretrained: str | None = None,
    checkpoint: Path | None = None,
    model_config: Path | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
) -> LoadedClap:
    """Load a CLAP model from the hub (``pretrained``, needs the network), a local directory, or random weights.

    ``checkpoint`` is a directory written by ``ClapModel.save_pretrained`` (with the processor's
    ``save_pretrained``: tokenizer and ``preprocessor_config.json``). With neither, the weights are random
    (seeded) in the laion/clap-htsat-unfused architecture, or in the one ``model_config`` (a JSON object
    of ClapConfig fields, merged over it) describes.
    """
    if pretrained and checkpoint:
        raise ExportError("give a pretrained model name or a checkpoint directory, not both")
    if model_config is not None and (pretrained or checkpoint):
        raise ExportError("a model config describes random weights; a pretrained model or checkpoint has its own")
    torch.manual_seed(seed)
    if pretrained:
        loaded = _load_saved(pretrained, cache_dir=cache_dir, local=False)
    elif checkpoint is not None:
        if not checkpoint.is_dir():
            raise ExportError(
                f"checkpoint {checkpoint} is not a directory; give the folder ClapModel.save_pretrained wrote"
            )
        loaded = _load_saved(str(checkpoint), cache_dir=cache_dir, local=True)
    else:
        loaded = _random_model(model_config, seed)
    loaded.model.eval()
    return loaded


def _load_saved(where: str, *, cache_dir: Path | None, local: bool) -> LoadedClap:
    transformers = import_transformers()
    kwargs: dict[str, Any] = {"cache_dir": str(cache_dir) if cache_dir else None, "local_files_only": local}
    try:
        model = transformers.ClapModel.from_pretrained(where, **kwargs)
        extractor = transformers.ClapFeatureExtractor.from_pretrained(where, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
    except Exception as exc:  # hub, file and config failures all surface here with varied types
        if not local:
            raise ExportError(
                f"could not get {where!r} from the model hub ({type(exc).__name__}: {exc}). "
                "Downloading needs network access to the hub; where there is none, save the model and "
                "its processor elsewhere (ClapModel/ClapProcessor.save_pretrained) and pass the folder "
                "with --checkpoint."
            ) from exc
        raise ExportError(
            f"could not load a CLAP model, processor and tokenizer from {where} "
            f"({type(exc).__name__}: {exc}); the folder needs what ClapModel.save_pretrained and "
            "ClapProcessor.save_pretrained write"
        ) from exc
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{where} has no fast (tokenizer.json) tokenizer; bundles need one")
    # The tokenizer as transformers built it (its post-processor included), so that ids match by construction.
    tokenizer_json = backend.to_str()
    if not local:
        return LoadedClap(model, extractor, tokenizer_json, {"kind": "pretrained", "pretrained": where}, where)
    folder = Path(where)
    # Sharded checkpoints are named by their first shard.
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    digest = sha256_file(weights[0]) if weights else "unknown"
    source = {"kind": "checkpoint", "checkpoint": folder.name, "weights_sha256": digest}
    return LoadedClap(model, extractor, tokenizer_json, source, f"clap@{digest[:12]}")


def _random_model(model_config: Path | None, seed: int) -> LoadedClap:
    transformers = import_transformers()
    overrides: dict[str, Any] | None = None
    if model_config is not None:
        try:
            overrides = json.loads(model_config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"model config {model_config} is not readable JSON ({exc})") from exc
        if not isinstance(overrides, dict):
            raise ExportError(f"model config {model_config} is not a JSON object of ClapConfig fields")
    model = transformers.ClapModel(clap_config(overrides))
    extractor = transformers.ClapFeatureExtractor(**CLAP_HTSAT_UNFUSED_FEATURES)
    source: dict[str, Any] = {"kind": "random", "seed": seed, "architecture": "clap-htsat-unfused"}
    if overrides:
        source["model_config"] = overrides
    return LoadedClap(model, extractor, None, source, f"clap-htsat-unfused/random-seed{seed}")


def audio_config_from_extractor(extractor: Any, window_hop_seconds: float | None = None) -> AudioConfig:
    """The bundle's ``audio`` settings equal to a ``ClapFeatureExtractor``'s (unfused models only)."""
    if extractor.truncation != "rand_trunc":
        raise ExportError(
            f"the feature extractor's truncation is {extractor.truncation!r}: fused CLAP models (four mel views "
            "per clip and an is_longer flag) cannot be bundled; export an unfused model (truncation rand_trunc)"
        )
    if extractor.padding not in ("repeatpad", "pad"):
        raise ExportError(
            f"the feature extractor pads short sounds with {extractor.padding!r}; bundles know repeatpad and pad"
        )
    clip_seconds = float(extractor.nb_max_samples) / float(extractor.sampling_rate)
    return AudioConfig(
        sample_rate=int(extractor.sampling_rate),
        clip_seconds=clip_seconds,
        # Half-overlapping windows: a sound event near a window edge is whole in the next one.
        window_hop_seconds=window_hop_seconds or clip_seconds / 2,
        short=str(extractor.padding),
        n_fft=int(extractor.fft_window_size),
        hop_length=int(extractor.hop_length),
        win_length=int(extractor.fft_window_size),
        n_mels=int(extractor.feature_size),
        f_min=float(extractor.frequency_min),
        f_max=float(extractor.frequency_max),
        # rand_trunc selects transformers' librosa-style filter bank (mel_filters_slaney): Slaney scale and norm.
        mel_scale="slaney",
        mel_norm="slaney",
        power=2.0,
        log="db",
        amin=1e-10,
        top_db=None if extractor.top_db is None else float(extractor.top_db),
        center=True,
        pad_mode="reflect",
    )


def train_roberta_tokenizer(texts: Sequence[str], vocab_size: int = RANDOM_VOCAB_SIZE) -> Any:
    """A byte-level BPE tokenizer laid out like RoBERTa's (special ids, ``<s> ... </s>``) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    # The trainer numbers special tokens first, in the order given: their ids are their positions.
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", SPECIAL_TOKENS.index("</s>")),
        ("<s>", SPECIAL_TOKENS.index("<s>")),
        trim_offsets=True,
        add_prefix_space=False,
    )
    return tok


def probe_sounds(config: AudioConfig, count: int = N_PROBE_SOUNDS) -> list[np.ndarray]:
    """``count`` synthetic mono sounds at the tower's rate (tones, chords, noise, chirps, clicks), fixed."""
    rng = np.random.default_rng(2468)
    rate = config.sample_rate
    sounds: list[np.ndarray] = []
    for i in range(count):
        # Lengths from a fifth of a clip (tiled by repeatpad) to a whole clip.
        seconds = config.clip_seconds * (0.2 + 0.8 * ((i * 7) % count) / max(count - 1, 1))
        t = np.arange(int(seconds * rate)) / rate
        kind = i % 4
        if kind == 0:
            freqs = rng.uniform(80, 4_000, 1 + i % 3)
            wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
        elif kind == 1:
            wave = rng.normal(0, 1, t.shape) * (0.2 + 0.8 * (np.sin(2 * np.pi * rng.uniform(0.5, 4) * t) > 0))
        elif kind == 2:
            f0, f1 = rng.uniform(100, 800), rng.uniform(2_000, 12_000)
            wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-3))))
        else:
            wave = np.zeros_like(t)
            wave[:: max(1, int(rate * rng.uniform(0.05, 0.5)))] = 1.0
            wave += rng.normal(0, 0.01, t.shape)
        sounds.append((rng.uniform(0.05, 0.9) * np.asarray(wave)).astype(np.float32))
    return sounds


class _TextTower(nn.Module):
    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        clap: Any = self.model
        # The tokenizer pads with pad_id only after the end token, so "not padding" is the attention mask
        # transformers' tokenizer returns (the text model's position ids are derived the same way).
        mask = input_ids.ne(self.pad_id).to(torch.long)
        pooled = clap.text_model(input_ids=input_ids, attention_mask=mask).pooler_output
        return clap.text_projection(pooled)


class _AudioTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        clap: Any = self.model
        # HTSAT takes [batch, 1, frames, n_mels] (one mel view per clip when unfused).
        pooled = clap.audio_model(input_features=features.unsqueeze(1)).pooler_output
        return clap.audio_projection(pooled)


def _check_compatible(model: Any, tokenizer: HfTokenizer, audio: AudioConfig, context_length: int) -> None:
    text_cfg, audio_cfg = model.config.text_config, model.config.audio_config
    if audio_cfg.enable_fusion:
        raise ExportError("the model is a fused CLAP (enable_fusion); only unfused models can be bundled")
    if tokenizer.vocab_size > int(text_cfg.vocab_size):
        raise ExportError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model embeds {text_cfg.vocab_size}")
    if tokenizer.pad_id != text_cfg.pad_token_id:
        raise ExportError(
            f"the tokenizer pads with id {tokenizer.pad_id} but the text model's pad_token_id is "
            f"{text_cfg.pad_token_id}; position ids would differ"
        )
    # RoBERTa numbers positions from pad_token_id + 1.
    longest = int(text_cfg.max_position_embeddings) - int(text_cfg.pad_token_id) - 1
    if not 2 <= context_length <= longest:
        raise ExportError(f"context_length must be 2..{longest} for this text model, got {context_length}")
    if audio.n_mels != int(audio_cfg.num_mel_bins):
        raise ExportError(f"the feature extractor makes {audio.n_mels} mels, the model wants {audio_cfg.num_mel_bins}")
    fold = int(audio_cfg.spec_size) * (int(audio_cfg.spec_size) // int(audio_cfg.num_mel_bins))
    if audio.frames > fold:
        raise ExportError(f"clips of {audio.frames} frames exceed the audio model's {fold}")


def _tower_file(tower: str, precision: str) -> str:
    return f"{tower}.onnx" if precision == "fp32" else f"{tower}.{precision}.onnx"


@dataclass(frozen=True)
class _Probe:
    """A tower's probe input and its fp32 ONNX embeddings, the reference every variant is measured against."""

    input_name: str
    feed: np.ndarray
    reference: np.ndarray


def _variant(
    precision: str, files: dict[str, str], to_fp32: dict[str, dict[str, float]], to_torch: dict[str, dict[str, float]]
) -> Variant:
    return Variant(
        precision=precision,
        text=files["text"],
        image=files.get("image"),
        audio=files.get("audio"),
        cosine_to_fp32=to_fp32,
        cosine_to_torch=to_torch,
        target=PRECISION_TARGETS[precision],
    )


def _variants(
    staging: Path,
    probes: dict[str, _Probe],
    to_torch: dict[str, dict[str, float]],
    wanted: Sequence[str],
    say: Progress,
) -> dict[str, Variant]:
    """The fp32 variant and each wanted reduced precision, made from the fp32 towers and measured on the probes."""
    exact = {"mean": 1.0, "min": 1.0}
    fp32 = {tower: _tower_file(tower, "fp32") for tower in probes}
    variants = {"fp32": _variant("fp32", fp32, {t: exact for t in probes}, to_torch)}
    for precision in wanted:
        if precision == "fp32":
            continue
        convert = quantize_int8 if precision == "int8" else convert_fp16
        say(f"making the {precision} variant")
        files, cosine = {}, {}
        for tower, probe in probes.items():
            files[tower] = _tower_file(tower, precision)
            convert(staging / fp32[tower], staging / files[tower])
            embeddings = _run_onnx(staging / files[tower], probe.input_name, probe.feed, precision)
            cosine[tower] = cosine_stats(embeddings, probe.reference)
        say(f"{precision} vs fp32 cosine: {cosine}")
        variants[precision] = _variant(precision, files, cosine, {})
    return variants


def _file_entries(directory: Path) -> dict[str, FileEntry]:
    return {
        p.name: FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def export_clap_bundle(
    loaded: LoadedClap,
    out_dir: str | Path,
    *,
    model_id: str | None = None,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    precisions: Sequence[str] = ("fp32",),
    tokenizer_json: Path | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Export a CLAP model to a verified text + audio bundle directory and return its manifest.

    Writes ``text.onnx`` / ``audio.onnx`` (fp32, opset 17, dynamic batch, projected and unnormalised
    embeddings) plus one pair per extra precision, ``tokenizer.json`` (the model's, a copy of
    ``tokenizer_json``, or for random weights a small BPE trained on the probe captions) and ``model.json``.
    Measures both fp32 towers against PyTorch on probe captions and generated sounds (refusing, with
    :class:`ExportError`, a cosine below 0.9999) and every variant against fp32. The directory appears
    only when complete.
    """
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown precisions {unknown}; choose from {PRECISIONS}")
    wanted = ["fp32", *(p for p in PRECISIONS if p in precisions and p != "fp32")]
    model: Any = loaded.model.float().eval().cpu()
    audio = audio_config_from_extractor(loaded.feature_extractor)

    staging = _prepare_dir(out_dir, overwrite)
    try:
        tok_path = staging / TOKENIZER_FILE
        if tokenizer_json is not None:
            shutil.copyfile(tokenizer_json, tok_path)
        elif loaded.tokenizer_json is not None:
            tok_path.write_text(loaded.tokenizer_json, encoding="utf-8")
        else:
            say("random weights: training a small byte-level BPE vocabulary on the probe captions")
            train_roberta_tokenizer(probe_texts(10_000)).save(str(tok_path))
        try:
            tokenizer = HfTokenizer.from_file(tok_path, context_length, PAD_TOKEN)
        except BundleError as exc:
            raise ExportError(f"the tokenizer cannot be used ({exc})") from exc
        _check_compatible(model, tokenizer, audio, context_length)

        texts = probe_texts(N_PROBE_TEXTS)
        ids, _ = tokenizer.encode_batch(texts)
        log_mel = LogMel(audio)
        features = np.stack([log_mel(fit_clip(s, audio)) for s in probe_sounds(audio)])
        with torch.no_grad():
            # The reference is transformers' own API, fed what its tokenizer and feature extractor give.
            ids_t = torch.from_numpy(ids)
            torch_text = model.get_text_features(input_ids=ids_t, attention_mask=ids_t.ne(tokenizer.pad_id))
            torch_audio = model.get_audio_features(input_features=torch.from_numpy(features).unsqueeze(1))
        torch_text_np = torch_text.pooler_output.float().numpy()
        torch_audio_np = torch_audio.pooler_output.float().numpy()
        embed_dim = int(torch_text_np.shape[1])

        fp32_text, fp32_audio = (staging / _tower_file(t, "fp32") for t in ("text", "audio"))
        with warnings.catch_warnings():
            # HTSAT's patch merging slices with step 2, which the tracer cannot constant-fold; the slices
            # stay in the graph as ops and give the same numbers (the cosine check below measures it).
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            say(f"exporting the text tower to {fp32_text.name}")
            text_tower = _TextTower(model, tokenizer.pad_id).eval()
            _export_onnx(text_tower, torch.from_numpy(ids[:2]), fp32_text, TEXT_INPUT)
            say(f"exporting the audio tower to {fp32_audio.name}")
            _export_onnx(_AudioTower(model).eval(), torch.from_numpy(features[:2]), fp32_audio, AUDIO_INPUT)

        ref_text = _run_onnx(fp32_text, TEXT_INPUT, ids, "fp32")
        ref_audio = _run_onnx(fp32_audio, AUDIO_INPUT, features, "fp32")
        to_torch = {"text": cosine_stats(ref_text, torch_text_np), "audio": cosine_stats(ref_audio, torch_audio_np)}
        say(f"fp32 ONNX vs PyTorch cosine: {to_torch}")
        if min(s["min"] for s in to_torch.values()) < COSINE_FLOOR:
            raise ExportError(
                f"the ONNX towers disagree with PyTorch (cosine {to_torch}, floor {COSINE_FLOOR}); export refused"
            )

        probes = {
            "text": _Probe(TEXT_INPUT, ids, ref_text),
            "audio": _Probe(AUDIO_INPUT, features, ref_audio),
        }
        variants = _variants(staging, probes, to_torch, wanted, say)
        transformers = import_transformers()
        manifest = Manifest(
            model_id=model_id or loaded.model_id,
            embed_dim=embed_dim,
            context_length=context_length,
            vocab_size=tokenizer.vocab_size,
            image=None,
            audio=audio,
            files=_file_entries(staging),
            variants=variants,
            tokenizer_file=TOKENIZER_FILE,
            tokenizer_kind="huggingface",
            pad_token=PAD_TOKEN,
            # CLAP learns one temperature per direction; text -> audio is the one text search uses.
            logit_scale=round(float(model.logit_scale_t.detach().exp()), 6),
            exporter={
                "name": EXPORTER_NAME,
                "version": crossmodal.__version__,
                "family": "clap",
                "onnx_opset": OPSET,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "onnx": onnx.__version__,
                "probes": {"texts": N_PROBE_TEXTS, "sounds": N_PROBE_SOUNDS},
            },
            source=loaded.source,
        )
        _write_verified(manifest, staging, out_dir, wanted, say)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"bundle written to {out_dir}")
    return manifest
