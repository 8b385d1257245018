"""No API key, bearer header or private key ever reaches a log: every process of the TLS + API-key cluster logs at
debug level while success and failure paths run, then every captured log is scanned."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from crossmodal.client import Client, Item
from crossmodal.v1 import gateway_pb2, gateway_pb2_grpc
from tests.reliability import record
from tests.security.calls import bearer, gateway_calls, outcome
from tests.security.conftest import API_KEYS, RATE_BURST, RATE_KEYS, WRONG_KEYS, SecureCluster
from tests.support import wait_for


def _pem_secrets(path: Path) -> list[str]:
    """The base64 lines of a private key's PEM body, the body joined, and a distinctive piece of it."""
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("-----")]
    body = "".join(lines)
    return [*lines, body, body[len(body) // 2 : len(body) // 2 + 16]]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _exercise(secure: SecureCluster) -> int:
    """Run success and failure paths through every gateway and backend; the number of calls made."""
    calls = 0
    for variant in ("tls", "mtls"):
        gateway = secure.gateways[variant]
        leaf = secure.client if variant == "mtls" else None
        with Client(
            gateway.address,
            api_key=API_KEYS[1],
            root_certificates=secure.pki.ca_bytes(),
            client_cert=leaf.cert_bytes() if leaf else None,
            client_key=leaf.key_bytes() if leaf else None,
            timeout=20,
        ) as client:
            items = [Item(f"log-{variant}-t{i}", text=f"a green triangle number {i}") for i in range(3)]
            items += [Item(f"log-{variant}-img", image=_png()), Item(f"log-{variant}-bad", image=b"not an image")]
            acks = {a.id: a for a in client.ingest(items)}
            assert all(a.ok for i, a in acks.items() if not i.endswith("-bad"))
            assert acks[f"log-{variant}-bad"].code == grpc.StatusCode.INVALID_ARGUMENT
            assert client.search("a green triangle", k=3).hits
            assert client.delete([f"log-{variant}-t0"]) == 1
            calls += 3
        with secure.channel(gateway.address, leaf) as channel:
            rpcs = gateway_calls(channel, probe_id=f"log-{variant}-probe")
            for call in rpcs.values():
                for metadata in (
                    (),
                    *(bearer(k) for k in WRONG_KEYS),
                    (("authorization", API_KEYS[0]),),
                    (("authorization", f"Basic {API_KEYS[1]}"),),
                ):
                    assert outcome(call, metadata)[0] == grpc.StatusCode.UNAUTHENTICATED
                    calls += 1
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for bad in (
                gateway_pb2.SearchRequest(text="x", k=10**6),
                gateway_pb2.SearchRequest(k=3),
                gateway_pb2.SearchRequest(image=b"\x89PNG broken", k=3),
            ):
                try:
                    stub.Search(bad, metadata=bearer(API_KEYS[0]), timeout=20)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                else:
                    raise AssertionError(f"{bad} was accepted")
                calls += 1
            assert outcome(rpcs["Get"], (*bearer(API_KEYS[0]), ("x-request-id", "log-scan-1")))[0].name == "OK"
            calls += 1
    # Rate-limited calls, with the key only this test uses.
    limited = secure.gateways["limited"]
    with secure.channel(limited.address) as channel:
        stats = gateway_calls(channel, probe_id="log-rate")["GetStats"]
        codes = [outcome(stats, bearer(RATE_KEYS[2]))[0] for _ in range(RATE_BURST + 2)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        calls += len(codes)
    # Refused handshakes at every server: plaintext, and a certificate of another CA.
    probe = health_pb2.HealthCheckRequest()
    for process in [*secure.backends, *secure.gateways.values()]:
        for channel in (
            grpc.insecure_channel(process.address),
            secure.channel(process.address, secure.rogue_client),
            secure.channel(process.address, secure.client, ca=secure.rogue.ca_bytes()),
        ):
            with channel:
                try:
                    health_pb2_grpc.HealthStub(channel).Check(probe, timeout=10)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                else:
                    # Only the TLS gateways without client-certificate requirement accept the rogue certificate.
                    assert process in (secure.gateways["tls"], secure.gateways["limited"]), process.module
                calls += 1
    return calls


def test_no_secret_appears_in_any_log(secure: SecureCluster) -> None:
    calls = _exercise(secure)
    gateways = [secure.gateways["tls"], secure.gateways["mtls"]]
    # The failures were logged (so the scan below is meaningful) before the logs are read.
    wait_for(
        lambda: all(g.log().count('"code": "UNAUTHENTICATED"') >= 25 for g in gateways),
        20,
        "the gateways to log the refused calls",
        interval=0.1,
    )
    secrets = {f"API key {k[:11]}...": k for k in [*API_KEYS, *RATE_KEYS, *WRONG_KEYS]}
    secrets["bearer scheme"] = "Bearer"
    secrets["PEM private key header"] = "PRIVATE KEY"
    keys = secure.private_keys()
    for path in keys:
        for n, piece in enumerate(_pem_secrets(path)):
            secrets[f"{path.name} piece {n}"] = piece
    logs = secure.log_files()
    assert len(logs) >= 4 + 3, [p.name for p in logs]  # every backend and gateway
    lines = 0
    debug_lines = 0
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        lines += text.count("\n")
        debug_lines += text.count('"level": "debug"')
        leaks += [f"{path.parent.name}/{path.name}: {name}" for name, secret in secrets.items() if secret in text]
    assert debug_lines > 0, "the processes did not log at debug level"
    assert leaks == [], leaks
    record(
        "security",
        "secrets never logged",
        f"{calls} calls at debug log level: ingest/search/delete, {len(WRONG_KEYS)} wrong keys and malformed or "
        "missing authorization on every RPC, bad requests, rate-limited calls, plaintext and other-CA handshakes "
        f"against every server; {len(logs)} process logs ({lines} lines) scanned for {len(secrets)} secrets",
        f"no API key (valid or wrong), no 'Bearer' and no piece of any of {len(keys)} private keys in any log",
    )
