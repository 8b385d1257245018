"""API keys at the gateway: every RPC refuses a missing, wrong or malformed key with UNAUTHENTICATED, a valid
key works, and health and reflection stay open for probes."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from crossmodal.v1 import gateway_pb2
from tests.reliability import record
from tests.security.calls import Metadata, bearer, gateway_calls, outcome
from tests.security.conftest import API_KEYS, WRONG_KEYS, SecureCluster

GATEWAY = "crossmodal.v1.GatewayService"
REFUSED_CREDENTIALS: dict[str, Metadata] = {
    "no key": (),
    "unknown key": bearer(WRONG_KEYS[0]),
    "prefix of a valid key": bearer(WRONG_KEYS[1]),
    "valid key without the Bearer scheme": (("authorization", API_KEYS[0]),),
    "valid key with another scheme": (("authorization", f"Basic {API_KEYS[0]}"),),
    "empty bearer": (("authorization", "Bearer "),),
    "valid key in another header": (("x-api-key", API_KEYS[0]),),
}


def test_every_rpc_needs_a_valid_api_key(secure: SecureCluster) -> None:
    gateway = secure.gateways["tls"]
    with secure.channel(gateway.address) as channel:
        calls = gateway_calls(channel, probe_id="auth-probe")
        refusals = 0
        for method, call in calls.items():
            for what, metadata in REFUSED_CREDENTIALS.items():
                code, message = outcome(call, metadata)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method, what, code, message)
                assert "authorization: Bearer" in message, (method, what, message)
                assert all(k not in message for k in [*API_KEYS, *WRONG_KEYS]), message
                refusals += 1
        # Refused before the handler ran: the unauthenticated Ingest stored nothing.
        reply = calls["Get"](bearer(API_KEYS[0]))
        assert isinstance(reply, gateway_pb2.GetResponse) and list(reply.missing) == ["auth-probe"]
        for key in API_KEYS:
            for method, call in calls.items():
                assert outcome(call, bearer(key)) == (grpc.StatusCode.OK, ""), (method, key[:8])
    record(
        "security",
        "API keys",
        f"{refusals} calls: each of Search, Ingest, Delete, Get and GetStats with {len(REFUSED_CREDENTIALS)} bad "
        "credentials (none, unknown, prefix of a valid key, missing/other scheme, empty, wrong header), over TLS",
        "all UNAUTHENTICATED naming `authorization: Bearer`, nothing stored; both valid keys served every RPC",
    )


def test_health_and_reflection_need_no_key(secure: SecureCluster) -> None:
    gateway = secure.gateways["tls"]
    with secure.channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", GATEWAY):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in replies[0].list_services_response.service}
        assert GATEWAY in names and "grpc.health.v1.Health" in names
        # A wrong key does not turn the probes away either: they are never checked.
        reply = health.Check(health_pb2.HealthCheckRequest(), metadata=bearer(WRONG_KEYS[0]), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    record(
        "security",
        "probes without a key",
        "health Check ('' and the gateway service) and reflection list_services, without a key and "
        "with a wrong one, on the TLS gateway that requires keys",
        "all answered (SERVING; reflection lists the gateway and health services)",
    )


def test_health_watch_needs_no_key(secure: SecureCluster) -> None:
    with secure.channel(secure.gateways["tls"].address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=GATEWAY), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
