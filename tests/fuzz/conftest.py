"""Fixtures of the fuzz tests: every service started once as a real process, and a known set stored first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crossmodal.v1 import encoder_pb2, encoder_pb2_grpc, gateway_pb2, index_pb2
from tests.fuzz import harness
from tests.fuzz.harness import SHARDS, Env
from tests.fuzz.strategies import real_images
from tests.support import ROOT, ServiceProcess

BUNDLE = ROOT / "models" / "default"
KNOWN = 12


def _start(env_dir: Path) -> dict[str, ServiceProcess]:
    # A crash of a native library dumps the Python stacks into the service log.
    common = {"CROSSMODAL_GRACE_SECONDS": "2", "CROSSMODAL_LOG_LEVEL": "warning", "PYTHONFAULTHANDLER": "1"}
    encoder = {
        **common,
        "CROSSMODAL_ENCODER_BUNDLE": str(BUNDLE),
        "CROSSMODAL_ENCODER_INTRA_OP_THREADS": "1",
        "CROSSMODAL_ENCODER_PREPROCESS_WORKERS": "2",
        "CROSSMODAL_ENCODER_MAX_WAIT_MS": "1",
    }
    procs: dict[str, ServiceProcess] = {}
    try:
        procs["text"] = ServiceProcess("services.encoder_text", env_dir / "text", encoder)
        procs["image"] = ServiceProcess("services.encoder_image", env_dir / "image", encoder)
        procs["index"] = ServiceProcess(
            "services.index",
            env_dir / "index",
            {
                **common,
                "CROSSMODAL_INDEX_DATA_DIR": str(env_dir / "index" / "data"),
                "CROSSMODAL_INDEX_SHARDS": ",".join(str(s) for s in SHARDS),
                "CROSSMODAL_INDEX_THREADS": "1",
                "CROSSMODAL_INDEX_WORKERS": "4",
            },
        )
        for proc in procs.values():
            proc.wait_ready(timeout=120)
        index = procs["index"].address
        procs["gateway"] = ServiceProcess(
            "services.gateway",
            env_dir / "gateway",
            {
                **common,
                "CROSSMODAL_GATEWAY_TEXT_ENCODERS": procs["text"].address,
                "CROSSMODAL_GATEWAY_IMAGE_ENCODERS": procs["image"].address,
                "CROSSMODAL_GATEWAY_SHARDS": ";".join(index for _ in SHARDS),
                # Generous deadlines: the fuzz run shares two cores with other jobs, and a skipped
                # shard would be a scheduling artefact, not an answer to the input.
                "CROSSMODAL_GATEWAY_SEARCH_TIMEOUT_MS": "20000",
                "CROSSMODAL_GATEWAY_HEDGE_DELAY_MS": "0",
            },
        ).wait_ready(timeout=120)
    except BaseException:
        for proc in procs.values():
            proc.close()
        raise
    return procs


def known_items(images: dict[str, bytes]) -> list[gateway_pb2.IngestRequest]:
    """The items stored before the fuzz, which must come out of it unchanged."""
    pictures = [images[name] for name in sorted(images) if name.startswith(("png", "jpeg"))]
    items = []
    for n in range(KNOWN):
        meta = {"set": "known", "n": str(n), "odd": "\u202e\u200b\U0001f600"}
        if n % 2:
            items.append(
                gateway_pb2.IngestRequest(
                    id=f"known-{n}", text=f"a red circle number {n}", metadata=meta, tags=["known-set"]
                )
            )
        else:
            items.append(
                gateway_pb2.IngestRequest(
                    id=f"known-{n}", image=pictures[n % len(pictures)], metadata=meta, tags=["known-set"]
                )
            )
    return items


def known_state(env: Env) -> tuple[list[bytes], list[bytes]]:
    """The known items as the gateway (Get) and the shards (GetVectors with vectors) return them."""
    got = env.gateway.Get(gateway_pb2.GetRequest(ids=env.known_ids), timeout=30)
    assert not got.missing, got.missing
    stored: list[bytes] = []
    for shard in SHARDS:
        reply = env.index.GetVectors(
            index_pb2.GetVectorsRequest(shard=shard, ids=env.known_ids, include_vectors=True), timeout=30
        )
        stored.extend(item.SerializeToString(deterministic=True) for item in reply.items)
    return [item.SerializeToString(deterministic=True) for item in got.items], sorted(stored)


@pytest.fixture(scope="session")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The four services on loopback, with the known set ingested."""
    procs = _start(tmp_path_factory.mktemp("fuzz"))
    try:
        with grpc.insecure_channel(procs["text"].address) as channel:
            info = encoder_pb2_grpc.EncoderServiceStub(channel).GetModelInfo(
                encoder_pb2.GetModelInfoRequest(), timeout=30
            )
        images = real_images()
        env = Env(procs, info.model_id, info.dim, images, [f"known-{n}" for n in range(KNOWN)])
        acks = list(env.gateway.Ingest(iter(known_items(images)), timeout=60))
        assert len(acks) == KNOWN and all(a.status.code == 0 for a in acks), acks
        yield env
        env.close()
    finally:
        for proc in procs.values():
            if proc.proc.poll() is None:
                proc.terminate()
            proc.close()


@pytest.fixture(scope="session")
def known_before(fuzz_env: Env) -> tuple[list[bytes], list[bytes]]:
    """The known set as stored before any fuzz input was sent."""
    return known_state(fuzz_env)


@pytest.fixture(scope="session")
def resources_before(fuzz_env: Env, known_before: tuple[list[bytes], list[bytes]]) -> dict[str, harness.Resources]:
    """Process resources after start-up and the known set, before any fuzz input."""
    return harness.settle(fuzz_env)


@pytest.fixture()
def env(fuzz_env: Env, known_before: tuple[list[bytes], list[bytes]], resources_before: object) -> Env:
    """The fuzz environment, once the before-fuzz state was recorded."""
    return fuzz_env
