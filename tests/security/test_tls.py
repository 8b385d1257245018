"""TLS and mutual TLS end to end: a client ingests and searches through a gateway whose every link is TLS,
and plaintext, untrusted or certificate-less peers are refused at every hop."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from functools import partial

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crossmodal.client import Client, Item
from crossmodal.scenes.gallery import gallery_items
from crossmodal.scenes.render import render_scene
from crossmodal.scenes.spec import SceneSpec, Split
from crossmodal.v1 import gateway_pb2
from tests.reliability import record
from tests.security.conftest import API_KEYS, TIMEOUT, SecureCluster
from tests.security.pki import Leaf
from tests.support import ServiceProcess, wait_for

TEXTS = 20
IMAGES = 6
REFUSED = grpc.StatusCode.UNAVAILABLE


def _png(spec: SceneSpec) -> bytes:
    out = io.BytesIO()
    render_scene(spec, 64).save(out, format="PNG")
    return out.getvalue()


def _items(variant: str, seed: int) -> tuple[list[Item], list[Item]]:
    """Texts and images with ids unique to `variant`, from a fixed seed."""
    texts = [
        Item(f"{variant}-t{i}", text=g.caption, metadata={"caption": g.caption, "variant": variant})
        for i, g in enumerate(gallery_items(TEXTS, seed=seed, split=Split.VAL))
    ]
    images = [
        Item(f"{variant}-i{i}", image=_png(g.spec), metadata={"variant": variant}, tags=["scene"])
        for i, g in enumerate(gallery_items(IMAGES, seed=seed + 1, split=Split.VAL))
    ]
    return texts, images


def _client(secure: SecureCluster, variant: str, **overrides: object) -> Client:
    """A client of gateway `variant` that trusts the session CA and presents a certificate to the mTLS one."""
    kwargs: dict[str, object] = {"api_key": API_KEYS[0], "root_certificates": secure.pki.ca_bytes(), "tls": True}
    if variant == "mtls":
        kwargs.update(client_cert=secure.client.cert_bytes(), client_key=secure.client.key_bytes())
    kwargs.update(overrides)
    return Client(secure.gateways[variant].address, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


def _refusal(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code a call that must fail ended with."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


@pytest.mark.parametrize("variant", ["tls", "mtls"])
def test_ingest_and_search_over_tls_end_to_end(secure: SecureCluster, variant: str) -> None:
    texts, images = _items(variant, seed=300 if variant == "tls" else 400)
    with _client(secure, variant) as client:
        acks = list(client.ingest([*texts, *images]))
        assert len(acks) == TEXTS + IMAGES and all(a.ok for a in acks), [a for a in acks if not a.ok][:3]
        assert {a.shard for a in acks} == {0, 1}  # both mTLS shards took writes
        found, missing = client.get([i.id for i in [*texts, *images]])
        assert missing == [] and len(found) == TEXTS + IMAGES
        for item in texts[:5]:
            hits = client.search(item.text, k=3, target="text", filter=None).hits
            assert hits and hits[0].metadata["caption"] == item.text and hits[0].score > 0.999
        for item in images[:3]:
            result = client.search(image=item.image, k=3, target="image")
            assert result.hits[0].id == item.id and result.partial_shards == []
        cross = client.search(texts[0].text, k=IMAGES, target="image").hits
        assert len(cross) == IMAGES and {h.modality for h in cross} == {"image"}
        stats = client.stats()
        assert stats.total_count >= TEXTS + IMAGES
        assert all(r.healthy for replicas in stats.shards.values() for r in replicas)
        assert client.delete([texts[-1].id]) == 1
    record(
        "security",
        f"end to end over {'mutual ' if variant == 'mtls' else ''}TLS",
        f"client -> gateway ({'mTLS' if variant == 'mtls' else 'TLS'}) -> text/image encoders and 2 shards "
        "(all mTLS, one certificate per process from a CA made in the test)",
        f"{TEXTS} texts + {IMAGES} images ingested on both shards, fetched, searched (text, image, cross-modal) "
        "and deleted over TLS; every replica healthy",
    )


def test_plaintext_untrusted_and_certificate_less_peers_are_refused(secure: SecureCluster) -> None:
    tls, mtls = secure.gateways["tls"], secure.gateways["mtls"]
    ca, rogue_ca = secure.pki.ca_bytes(), secure.rogue.ca_bytes()
    refused: dict[str, grpc.StatusCode] = {}
    with Client(tls.address, api_key=API_KEYS[0], timeout=10) as plain:
        refused["plaintext -> TLS gateway"] = _refusal(lambda: plain.search("a red circle"))
    with Client(tls.address, api_key=API_KEYS[0], root_certificates=rogue_ca, timeout=10) as untrusting:
        refused["client not trusting the CA -> TLS gateway"] = _refusal(lambda: untrusting.search("a red circle"))
    with Client(mtls.address, api_key=API_KEYS[0], timeout=10) as plain:
        refused["plaintext -> mTLS gateway"] = _refusal(lambda: plain.search("a red circle"))
    with _client(secure, "mtls", client_cert=None, client_key=None) as anonymous:
        refused["no client certificate -> mTLS gateway"] = _refusal(lambda: anonymous.search("a red circle"))
    with _client(
        secure, "mtls", client_cert=secure.rogue_client.cert_bytes(), client_key=secure.rogue_client.key_bytes()
    ) as rogue:
        refused["certificate of another CA -> mTLS gateway"] = _refusal(lambda: rogue.search("a red circle"))

    probe = health_pb2.HealthCheckRequest(service="")
    attempts: list[tuple[str, Leaf | None, bytes | None]] = [
        ("plaintext", None, None),
        ("no client certificate", None, ca),
        ("certificate of another CA", secure.rogue_client, ca),
        ("server not trusted (rogue CA)", secure.client, rogue_ca),
    ]
    for backend in secure.backends:
        for what, leaf, trust in attempts:
            if trust is None:
                channel = grpc.insecure_channel(backend.address)
            else:
                channel = secure.channel(backend.address, leaf, ca=trust)
            with channel:
                check = partial(health_pb2_grpc.HealthStub(channel).Check, probe, timeout=10)
                refused[f"{what} -> {backend.module} :{backend.port}"] = _refusal(check)
        with secure.channel(backend.address, secure.client) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(probe, timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert all(code == REFUSED for code in refused.values()), refused

    # The refused handshakes did not disturb the gateways: authenticated TLS callers are still served.
    for variant in ("tls", "mtls"):
        with _client(secure, variant) as client:
            assert client.stats().model_id
    assert all(p.proc.poll() is None for p in [*secure.backends, *secure.gateways.values()])
    record(
        "security",
        "TLS refusals",
        f"{len(refused)} connections: plaintext, untrusted-CA, certificate-less and other-CA clients against the "
        f"TLS gateway, the mTLS gateway and each of {len(secure.backends)} mTLS backends (2 encoders, 2 shards)",
        "all refused with UNAVAILABLE; properly certified callers kept being served and no process exited",
    )


def _health(channel: grpc.Channel) -> str:
    """The overall health status of a server, or the status code of a failed check."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _unreachable_report(process: ServiceProcess) -> str | None:
    """The gateway's log line saying its text encoder (the first it waits for) is UNAVAILABLE, once there is one."""
    lines = process.log().splitlines()
    return next((ln for ln in lines if "waiting for the text encoder" in ln and "UNAVAILABLE" in ln), None)


def _listening_port(process: ServiceProcess) -> int:
    for line in process.log().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "listening":
                return int(event["port"])
    return 0


def test_gateway_without_valid_client_tls_reports_backends_unreachable(secure: SecureCluster) -> None:
    """A gateway that cannot complete mutual TLS with its backends says so, stays NOT_SERVING and stops on SIGTERM."""
    variants: dict[str, dict[str, str]] = {
        "no client TLS settings": {},
        "trusts the CA, no client certificate": {"CROSSMODAL_CLIENT_TLS_CA_FILE": str(secure.pki.ca)},
        "client certificate of another CA": {
            "CROSSMODAL_CLIENT_TLS_CA_FILE": str(secure.pki.ca),
            "CROSSMODAL_CLIENT_TLS_CERT_FILE": str(secure.rogue_client.cert),
            "CROSSMODAL_CLIENT_TLS_KEY_FILE": str(secure.rogue_client.key),
        },
    }
    started = time.monotonic()
    gateways = {
        name: secure.start(f"misconfigured-{n}", "services.gateway", {**secure.backend_env(), **env})
        for n, (name, env) in enumerate(variants.items())
    }
    try:
        for name, gateway in gateways.items():
            line = wait_for(
                partial(_unreachable_report, gateway),
                30,
                f"the gateway with {name} to report its encoders unreachable",
                interval=0.1,
            )
            assert secure.text is not None and secure.text.address in line
            port = wait_for(partial(_listening_port, gateway), 10, "the listening port")
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                # Health answers for itself while the gateway starts (not the UNAVAILABLE of its own RPCs).
                assert _health(channel) == "NOT_SERVING"
                # Callers get a prompt, retryable answer instead of a call that hangs.
                t0 = time.monotonic()
                stats = channel.unary_unary(
                    "/crossmodal.v1.GatewayService/GetStats",
                    request_serializer=gateway_pb2.GetStatsRequest.SerializeToString,
                    response_deserializer=gateway_pb2.GetStatsResponse.FromString,
                )
                assert _refusal(partial(stats, gateway_pb2.GetStatsRequest(), timeout=10)) == REFUSED
                assert time.monotonic() - t0 < 5
            assert not gateway.ready_file.exists()
        reported = time.monotonic() - started
        stops = {}
        for name, gateway in gateways.items():
            t0 = time.monotonic()
            gateway.proc.terminate()
            gateway.proc.wait(15)
            stops[name] = time.monotonic() - t0
    finally:
        for gateway in gateways.values():
            gateway.close()
    assert reported < 60
    record(
        "security",
        "gateway without a valid client certificate",
        f"{len(variants)} gateways against the mTLS backends: {', '.join(variants)}",
        f"each logged its encoders UNAVAILABLE within {reported:.1f}s, never reported SERVING (GetStats answered "
        f"UNAVAILABLE at once) and stopped on SIGTERM within {max(stops.values()):.1f}s",
    )
