"""`crossmodal up` and the audio tower: its encoder runs when the bundle has one, unless `--no-audio` says not."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import grpc
import pytest

from crossmodal.bundle import Manifest
from crossmodal.cluster import ClusterError, ClusterSpec, LocalCluster
from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc
from tests.bundle.audio_bundles import AUDIO, encode_sound, with_audio_tower
from tests.cli.upcli import (
    FREE_PORTS,
    environment,
    ready_info,
    running_service,
    start_up,
    wait_reported,
    without_audio_tower,
)

# One shard and no HTTP service: only the encoders matter here.
SMALL = ("--shards", "1", "--port", "0", "--http-port", "-1", *FREE_PORTS)


@pytest.fixture(scope="module")
def audio_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared bundle if it has an audio tower, else a copy of it given a random-weight one."""
    if "audio" in Manifest.load(bundle_dir).towers:
        return bundle_dir
    out = tmp_path_factory.mktemp("audio-bundle") / "bundle"
    with_audio_tower(bundle_dir, out, keep_image=True)
    return out


def _run_up(cwd: Path, bundle: Path, *extra: str) -> tuple[str, dict[str, dict[str, int]], dict[str, str]]:
    """Start `up`, wait until it reports the cluster, stop it; its output, the ready files, the gateway's env."""
    up, output = start_up(cwd, "--data-dir", "data", "--bundle", str(bundle), *SMALL, *extra)
    try:
        wait_reported(up, output, r"gateway at ([0-9.]+:[0-9]+)", "crossmodal up to report the gateway")
        ready = ready_info(cwd / "data" / "logs")
        gateway_env = environment(ready["gateway"]["pid"])
        # A real call to the audio encoder while the cluster is up, when it runs one.
        if "encoder_audio" in ready:
            _check_audio_encoder(f"127.0.0.1:{ready['encoder_audio']['port']}", Manifest.load(bundle).embed_dim)
    finally:
        up.send_signal(signal.SIGINT)
        status = up.wait(90)
    text = output.read_text()
    assert status == 0, text
    assert [name for name, info in ready.items() if running_service(info["pid"])] == []
    return text, ready, gateway_env


def _check_audio_encoder(address: str, dim: int) -> None:
    """Encode one WAV through the audio encoder at `address`: a unit vector of the bundle's dimension."""
    sound = encode_sound("wav", "pcm_s16le", AUDIO.sample_rate, "mono", 0.5)
    with grpc.insecure_channel(address) as channel:
        reply = encoder_pb2_grpc.EncoderServiceStub(channel).Encode(
            encoder_pb2.EncodeRequest(items=[encoder_pb2.EncodeItem(key="a", audio=sound)]), timeout=60
        )
    (result,) = reply.results
    assert result.status.code == 0, result.status.message
    assert len(result.vector) == dim


def test_up_starts_the_audio_encoder_for_a_bundle_with_an_audio_tower(tmp_path: Path, audio_bundle: Path) -> None:
    text, ready, gateway_env = _run_up(tmp_path, audio_bundle)
    assert {"encoder_text", "encoder_image", "encoder_audio", "index-0-0", "gateway"} <= set(ready), text
    address = f"127.0.0.1:{ready['encoder_audio']['port']}"
    # Printed like the other encoders, and the gateway dials it.
    assert f"encoder_audio    SERVING on {address} (metrics :{ready['encoder_audio']['metrics_port']})" in text
    assert gateway_env["CROSSMODAL_GATEWAY_AUDIO_ENCODERS"] == address
    assert gateway_env["CROSSMODAL_GATEWAY_IMAGE_ENCODERS"] == f"127.0.0.1:{ready['encoder_image']['port']}"
    assert "towers: text, image, audio\n" in text


def test_no_audio_leaves_the_audio_encoder_off(tmp_path: Path, audio_bundle: Path) -> None:
    text, ready, gateway_env = _run_up(tmp_path, audio_bundle, "--no-audio")
    assert "encoder_audio" not in ready and not (tmp_path / "data" / "logs" / "encoder_audio.log").exists()
    assert {"encoder_text", "encoder_image", "gateway"} <= set(ready), text
    assert gateway_env["CROSSMODAL_GATEWAY_AUDIO_ENCODERS"] == ""
    assert "towers: text, image (audio encoder left off by --no-audio" in text


def test_the_encoders_follow_the_bundles_towers(tmp_path: Path, bundle_dir: Path, audio_bundle: Path) -> None:
    """Which encoders a cluster would start, read from the manifest (no process is started)."""
    plain = without_audio_tower(audio_bundle, tmp_path / "plain")
    text_audio = tmp_path / "text-audio"
    with_audio_tower(plain, text_audio, keep_image=False)

    def towers(bundle: Path, **fields: object) -> tuple[str, ...]:
        return LocalCluster(ClusterSpec.on_free_ports(tmp_path / "data", bundle=bundle, **fields)).towers()

    assert towers(plain) == ("text", "image")
    assert towers(audio_bundle) == ("text", "image", "audio")
    assert towers(audio_bundle, audio=False) == ("text", "image")
    assert towers(text_audio) == ("text", "audio")
    with pytest.raises(ClusterError, match="has no image tower, and the audio encoder is left off"):
        towers(text_audio, audio=False)
    broken = tmp_path / "broken"
    shutil.copytree(plain, broken)
    (broken / "model.json").write_text("{}")
    with pytest.raises(ClusterError, match=f"model bundle at {broken}.*format_version"):
        towers(broken)
