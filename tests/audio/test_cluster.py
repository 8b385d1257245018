"""Audio through a real cluster: short sounds, long sounds as moments, videos' sound tracks, bad input.

The test tower has random weights (until the built-in one is trained), so these tests check plumbing: a
stored sound is its own best hit, a window cut from a recording finds that recording at that time.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from PIL import Image

from crossmodal.bundle import ModelBundle
from crossmodal.bundle.audio import AudioInputError, pcm16
from crossmodal.client import Client, Item
from crossmodal.cluster import ClusterSpec, LocalCluster
from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc
from tests.audio.conftest import MAX_CHUNK_BYTES, MAX_SECONDS, RATE, noise, tone, wav, write_sound
from tests.bundle.audio_bundles import encode_sound, wav_bytes, with_audio_tower

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# A recording of three steady sounds of 3 s each: noise, a 300 Hz tone, a 2 kHz tone.
LONG = np.concatenate([noise(3, seed=1), tone(300, 3), tone(2000, 3)])


@pytest.fixture()
def client(audio_cluster: LocalCluster) -> Iterator[Client]:
    with Client(audio_cluster.address) as client:
        yield client


@pytest.fixture()
def stub(audio_cluster: LocalCluster) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with grpc.insecure_channel(audio_cluster.address) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def stored(client: Client, ids: list[str]) -> list[str]:
    """Which of `ids` are stored."""
    found, _ = client.get(ids)
    return [i.id for i in found]


def windows(sound_id: str, count: int) -> list[str]:
    return [f"{sound_id}#window={n}" for n in range(count)]


def stream(
    header: gateway_pb2.AudioHeader, *chunks: gateway_pb2.AudioChunk
) -> Iterator[gateway_pb2.IngestAudioRequest]:
    yield gateway_pb2.IngestAudioRequest(header=header)
    for chunk in chunks:
        yield gateway_pb2.IngestAudioRequest(chunk=chunk)


def test_short_sounds_are_found_by_sound_text_image_and_vector(
    client: Client, audio_bundle: Path, tmp_path: Path
) -> None:
    beep, hum = tmp_path / "beep.wav", tmp_path / "hum.flac"
    beep.write_bytes(wav(tone(1200, 0.6)))
    write_sound(hum, tone(150, 0.8), "flac")  # any format PyAV decodes is taken
    assert client.ingest_audio_file("beep", beep).windows == 0  # no longer than a clip: one plain item
    ack = client.ingest_audio_file("hum", hum, metadata={"kind": "hum"})
    assert (ack.windows, round(ack.duration, 1)) == (0, 0.8)
    # A plain Ingest item: its length is the one the encoder decoded, whatever the caller said.
    (item_ack,) = client.ingest([Item("clicks", audio=wav(noise(0.5, seed=7)), metadata={"duration_seconds": "7"})])
    assert item_ack.ok, item_ack.message
    (hum_item, clicks_item), _ = client.get(["hum", "clicks"])
    assert hum_item.modality == "audio" and hum_item.metadata["duration_seconds"] == "0.800"
    assert clicks_item.metadata["duration_seconds"] == "0.500"

    for sound_id, query in (("beep", wav(tone(1200, 0.6))), ("hum", hum.read_bytes()), ("clicks", wav(noise(0.5, 7)))):
        top = client.search(audio=query, target="audio", k=3).hits[0]
        assert (top.id, top.modality) == (sound_id, "audio") and top.score > 0.99
        assert top.start == 0 and 0.4 < top.end < 1  # a whole sound: 0 to its length
    # Every direction the towers allow answers from the right modality.
    assert {h.modality for h in client.search("a low hum", target="audio", k=5).hits} == {"audio"}
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, "PNG")
    assert all(a.ok for a in client.ingest([Item("red", image=picture.getvalue())]))
    assert {h.modality for h in client.search(image=picture.getvalue(), target="audio", k=3).hits} == {"audio"}
    assert [h.id for h in client.search(audio=wav(tone(150, 0.8)), target="image", k=1).hits] == ["red"]
    # A vector made by the bundle's own audio tower (as a client that encodes locally would send it).
    (vector,) = ModelBundle.open(audio_bundle, towers=["audio"]).encode_clips([tone(1200, 0.6)])
    assert client.search(vector=vector.tolist(), target="audio", k=1).hits[0].id == "beep"
    stored_vector = client.search(like_id="hum", target="audio", k=1).hits
    assert stored_vector and stored_vector[0].id != "hum"  # "more like this" sound: other sounds
    assert all(a.ok for a in client.ingest([Item("caption", text="a high beep")]))
    assert [h.id for h in client.search(audio=wav(tone(1200, 0.6)), target="text", k=1).hits] == ["caption"]
    # "any": whole sounds answer beside texts and images.
    assert "beep" in [h.id for h in client.search(audio=wav(tone(1200, 0.6)), k=5).hits]


def test_a_long_sound_is_found_as_a_moment_and_replaced_and_deleted(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "recording.wav"
    path.write_bytes(wav(LONG))
    ack = client.ingest_audio_file("recording", path)
    # 9 s in 1 s windows every 0.5 s: starts 0, 0.5, ..., 8.0.
    assert (ack.windows, ack.duration) == (17, 9.0)
    assert len(stored(client, [*windows("recording", 17), "recording"])) == 18
    query = wav(LONG[3 * RATE : 4 * RATE])  # exactly the window at 3.0-4.0 s, inside the 300 Hz tone
    result = client.search(audio=query, target="audio", k=3)
    top = result.hits[0]
    assert (top.id, top.modality, top.best) == ("recording", "audio", 3.0)
    assert 2.0 <= top.start <= 3.0 and 4.0 <= top.end <= 6.5 and top.score > 0.99
    assert "window_start" not in top.metadata and top.metadata["path"] == str(path.resolve())
    assert not result.query_truncated
    assert client.search(audio=wav(LONG[: 2 * RATE]), target="audio", k=1).query_truncated

    # Re-ingested shorter: the surplus windows go; then as one clip: all of them go; then deleted.
    path.write_bytes(wav(LONG[: 3 * RATE]))
    again = client.ingest_audio_file("recording", path)
    assert (again.windows, again.replaced_windows) == (5, 12)
    assert stored(client, windows("recording", 17)) == windows("recording", 5)
    path.write_bytes(wav(LONG[: RATE // 2]))
    short = client.ingest_audio_file("recording", path)
    assert (short.windows, short.replaced_windows) == (0, 5)
    assert stored(client, [*windows("recording", 17), "recording"]) == ["recording"]
    path.write_bytes(wav(LONG))
    client.ingest_audio_file("recording", path)
    assert client.delete(["recording"]) == 1
    assert stored(client, [*windows("recording", 17), "recording"]) == []


def _video_with_sound(path: Path, sound: np.ndarray, seconds: int) -> None:
    """A grey H.264 video (10 frames/s) in Matroska whose sound track is `sound` in lossless FLAC."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("flac", rate=RATE, layout="mono")
        for n in range(seconds * 10):
            picture = np.full((64, 64, 3), (n * 3) % 255, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(video.encode(None))
        samples = np.frombuffer(pcm16(sound), "<i2")
        for start in range(0, len(samples), 4096):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 4096].copy(), format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))


def test_a_videos_sound_finds_its_moment_and_goes_with_the_video(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    _video_with_sound(path, LONG, 9)
    ack = client.ingest_video_file("clip.mkv", path)
    assert ack.frames >= 9 and ack.audio_windows == 17
    hits = client.search(audio=wav(LONG[6 * RATE : 7 * RATE]), target="audio", k=3).hits
    assert (hits[0].id, hits[0].modality) == ("clip.mkv", "video")
    assert 5.0 <= hits[0].best <= 7.0 and hits[0].start <= 6.0 <= hits[0].end
    # The sound track goes with the video: re-ingested without sound, its windows go; deleted, all goes.
    again = client.ingest_video_file("clip.mkv", path, sound=False)
    assert (again.audio_windows, again.replaced_audio_windows) == (0, 17)
    assert stored(client, windows("clip.mkv", 17)) == []
    client.ingest_video_file("clip.mkv", path)
    assert len(stored(client, windows("clip.mkv", 17))) == 17
    client.delete(["clip.mkv"])
    assert stored(client, [*windows("clip.mkv", 17), "clip.mkv#frame=0", "clip.mkv"]) == []


MP3 = encode_sound("mp3", "libmp3lame", 44_100, seconds=4.0)
BAD_FILES = {
    "corrupt": (b"\x00" * 4096, "corrupt: not a readable audio file"),
    "truncated": (MP3[: len(MP3) // 2], "corrupt: the audio is truncated"),
    "zero-length": (b"", "the item sound is empty (0 bytes)"),
    "no-samples": (wav_bytes(frames=0), "empty: the audio holds no samples"),
    "too-long": (wav_bytes(frames=RATE * 21), "too_long: the audio is longer than the 20 s allowed"),
    "channels": (wav_bytes(channels=6), "channels: the audio has 6 channels; at most 2 are accepted"),
    "rate": (wav_bytes(rate=500), "sample_rate: the audio's sample rate 500 Hz is outside"),
    "codec": (wav_bytes(tag=0x7A21), "codec: the audio stream's codec is not supported"),
}


def test_bad_sound_items_fail_alone_with_their_reasons(client: Client) -> None:
    items = [Item(f"bad-{name}", audio=data) for name, (data, _) in BAD_FILES.items()]
    acks = {a.id: a for a in client.ingest([*items, Item("good-one", audio=wav(tone(600, 0.5)))])}
    assert acks["good-one"].ok
    for name, (_, words) in BAD_FILES.items():
        ack = acks[f"bad-{name}"]
        assert ack.code == INVALID and words in ack.message, (name, ack.message)
    assert stored(client, list(acks)) == ["good-one"]
    (marker,) = client.ingest([Item("x#window=1", audio=wav(tone(600, 0.5)))])
    assert marker.code == INVALID and "#window=" in marker.message
    with pytest.raises(grpc.RpcError) as refused:
        client.search(audio=BAD_FILES["corrupt"][0], target="audio")
    assert refused.value.code() == INVALID and "the query sound: corrupt" in refused.value.details()


def test_bad_sound_files_are_refused_by_the_sdk_before_sending(client: Client, tmp_path: Path) -> None:
    cases = {**{n: BAD_FILES[n][0] for n in ("corrupt", "truncated", "no-samples")}, "channels": wav_bytes(channels=12)}
    for name, data in cases.items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        with pytest.raises(AudioInputError) as refused:
            client.ingest_audio_file(name, path)
        assert refused.value.kind == {"no-samples": "empty"}.get(name, name.replace("truncated", "corrupt"))
    assert stored(client, list(cases)) == []


def test_bad_audio_streams_are_refused_and_store_nothing(
    stub: gateway_pb2_grpc.GatewayServiceStub, client: Client
) -> None:
    header = gateway_pb2.AudioHeader(id="streamed", sample_rate=RATE)
    second = pcm16(tone(500, 1.5))
    chunk = gateway_pb2.AudioChunk
    cases = {
        "no header": (
            iter([gateway_pb2.IngestAudioRequest(chunk=chunk(pcm=second))]),
            "starts with the sound's header",
        ),
        "odd bytes": (stream(header, chunk(pcm=b"\x00" * 3)), "send whole 16-bit samples"),
        "big chunk": (
            stream(header, chunk(pcm=b"\x00" * (MAX_CHUNK_BYTES + 2))),
            "CROSSMODAL_GATEWAY_AUDIO_MAX_CHUNK_BYTES",
        ),
        "out of order": (
            stream(header, chunk(pcm=second[:3200]), chunk(pcm=second[3200:], first_sample=99)),
            "send the chunks in order",
        ),
        "absurd rate": (stream(gateway_pb2.AudioHeader(id="streamed", sample_rate=50)), "sample rate 50 Hz"),
        "long header": (
            stream(gateway_pb2.AudioHeader(id="streamed", sample_rate=RATE, duration_seconds=MAX_SECONDS + 1)),
            "CROSSMODAL_GATEWAY_AUDIO_MAX_SECONDS",
        ),
        "too long": (
            stream(header, *(chunk(pcm=b"\x00" * 32_000, first_sample=n * 16_000) for n in range(MAX_SECONDS + 1))),
            "longer than 30 s",
        ),
        "past its duration": (
            stream(gateway_pb2.AudioHeader(id="streamed", sample_rate=RATE, duration_seconds=0.2), chunk(pcm=second)),
            "past its duration",
        ),
        "empty": (stream(header), "has no samples"),
        "reserved key": (
            stream(gateway_pb2.AudioHeader(id="streamed", sample_rate=RATE, metadata={"audio_windows": "9"})),
            "reserved",
        ),
        "window id": (stream(gateway_pb2.AudioHeader(id="a#window=2", sample_rate=RATE)), "#window="),
    }
    for name, (requests, words) in cases.items():
        with pytest.raises(grpc.RpcError) as refused:
            stub.IngestAudio(requests, timeout=30)
        assert refused.value.code() == INVALID and words in refused.value.details(), (name, refused.value.details())
    assert stored(client, ["streamed", *windows("streamed", 4)]) == []


def test_without_an_audio_encoder_every_audio_request_is_failed_precondition(
    mute_cluster: LocalCluster, tmp_path: Path
) -> None:
    path = tmp_path / "beep.wav"
    path.write_bytes(wav(tone(1000, 0.5)))
    with Client(mute_cluster.address) as client:
        assert client.stats().audio_sample_rate == 0
        calls = {
            "query sound": lambda: client.search(audio=path.read_bytes()),
            "target audio": lambda: client.search("a beep", target="audio"),
            "stream": lambda: client.ingest_audio_file("beep", path),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
            assert "CROSSMODAL_GATEWAY_AUDIO_ENCODERS" in refused.value.details()
        (ack,) = client.ingest([Item("beep", audio=path.read_bytes())])
        assert ack.code == grpc.StatusCode.FAILED_PRECONDITION and "no audio encoder" in ack.message
        # Texts and images are unaffected, and "any" leaves sounds out.
        assert all(a.ok for a in client.ingest([Item("t", text="a beep")]))
        assert [h.id for h in client.search("a beep").hits] == ["t"]


def test_a_bundle_without_an_image_tower_serves_texts_and_sounds(tmp_path: Path, bundle_dir: Path) -> None:
    # A text+audio bundle (what `export-model` makes of a CLAP model): no image encoder runs, and every
    # image or video request is refused by name while texts and sounds work.
    bundle = tmp_path / "text-audio"
    with_audio_tower(bundle_dir, bundle, keep_image=False)
    spec = ClusterSpec.on_free_ports(tmp_path / "data", shards=1, bundle=bundle)
    with LocalCluster(spec) as cluster, Client(cluster.address) as client:
        assert {p.name for p in cluster.processes} == {"encoder_text", "encoder_audio", "index-0-0", "gateway"}
        acks = client.ingest(
            [Item("beep", audio=wav(tone(1200, 0.6))), Item("hum", audio=wav(tone(150, 0.8))), Item("t", text="a hum")]
        )
        assert all(a.ok for a in acks), acks
        assert client.search(audio=wav(tone(150, 0.8)), target="audio", k=1).hits[0].id == "hum"
        assert {h.modality for h in client.search("a low hum", target="audio", k=5).hits} == {"audio"}
        assert [h.id for h in client.search(audio=wav(tone(150, 0.8)), target="text", k=1).hits] == ["t"]
        picture = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(picture, "PNG")
        (ack,) = client.ingest([Item("red", image=picture.getvalue())])
        assert ack.code == grpc.StatusCode.FAILED_PRECONDITION and "no image encoder" in ack.message
        with pytest.raises(grpc.RpcError) as refused:
            client.search(image=picture.getvalue())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CROSSMODAL_GATEWAY_IMAGE_ENCODERS" in (refused.value.details() or "")
        video = [
            gateway_pb2.IngestVideoRequest(header=gateway_pb2.VideoHeader(id="v", duration_seconds=1.0)),
            gateway_pb2.IngestVideoRequest(frame=gateway_pb2.VideoFrame(seconds=0.0, image=picture.getvalue())),
        ]
        with pytest.raises(grpc.RpcError) as refused, grpc.insecure_channel(cluster.address) as channel:
            gateway_pb2_grpc.GatewayServiceStub(channel).IngestVideo(iter(video))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
        assert "no image encoder" in (refused.value.details() or "")
        assert client.stats().total_count == 3
