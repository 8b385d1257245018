"""Per-key rate limits at the gateway: a burst beyond the budget gets RESOURCE_EXHAUSTED with the time to wait,
each key has its own budget, probes are never limited, and the budget refills."""

from __future__ import annotations

import re
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability import record
from tests.security.calls import bearer, gateway_calls, outcome
from tests.security.conftest import RATE_BURST, RATE_KEYS, RATE_RPS, WRONG_KEYS, SecureCluster
from tests.support import metric_value, wait_for

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def test_rate_limits_per_key_and_refill(secure: SecureCluster) -> None:
    gateway = secure.gateways["limited"]
    gamma, delta = RATE_KEYS[0], RATE_KEYS[1]
    with secure.channel(gateway.address) as channel:
        stats = gateway_calls(channel, probe_id="rate-probe")["GetStats"]
        started = time.monotonic()
        ok = 0
        refusal = (grpc.StatusCode.OK, "")
        # Stop at the first refusal; a slow machine may refill a token or two on the way, so allow a few extra.
        for _ in range(RATE_BURST + 5):
            refusal = outcome(stats, bearer(gamma))
            if refusal[0] != grpc.StatusCode.OK:
                break
            ok += 1
        exhausted_at = time.monotonic()
        code, message = refusal
        assert code == EXHAUSTED, (ok, refusal)
        assert RATE_BURST <= ok <= RATE_BURST + int((exhausted_at - started) * RATE_RPS) + 1, ok
        # Actionable: names the limit, the burst and how long to wait.
        assert f"rate limit of {RATE_RPS:g} calls/s (burst {RATE_BURST})" in message, message
        hint = re.search(r"retry in ([0-9.]+)s", message)
        assert hint is not None, message
        retry_in = float(hint.group(1))
        assert 0 < retry_in <= 1 / RATE_RPS, message
        assert all(k not in message for k in RATE_KEYS), message

        # The key check comes first: an unknown key is UNAUTHENTICATED, not charged to anyone's budget.
        assert outcome(stats, bearer(WRONG_KEYS[0]))[0] == grpc.StatusCode.UNAUTHENTICATED
        # Another key has its own, full budget.
        for _ in range(RATE_BURST):
            assert outcome(stats, bearer(delta)) == (grpc.StatusCode.OK, "")
        assert outcome(stats, bearer(delta))[0] == EXHAUSTED
        # Probes are never limited.
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(3 * RATE_BURST):
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # The budget refills at RATE_RPS: polling (refused polls cost nothing) succeeds about when the hint said.
        wait_for(
            lambda: outcome(stats, bearer(gamma))[0] == grpc.StatusCode.OK,
            retry_in + 5.0,
            "the exhausted key's budget to refill",
            interval=0.1,
        )
        refilled_after = time.monotonic() - exhausted_at
    assert refilled_after <= retry_in + 5.0
    metrics = gateway.metrics()
    limited = metric_value(metrics, "crossmodal_rpc_requests_total", method="GetStats", code="RESOURCE_EXHAUSTED")
    assert limited >= 2
    record(
        "security",
        "rate limits",
        f"GetStats bursts over TLS against a gateway limited to {RATE_RPS:g} calls/s, burst {RATE_BURST}, "
        f"with two keys; {3 * RATE_BURST} health probes in between",
        f"key 1: {ok} calls served, then RESOURCE_EXHAUSTED 'retry in {retry_in:.2f}s'; key 2 kept its own "
        f"{RATE_BURST}-call burst; probes never limited; key 1 served again {refilled_after:.1f}s later; "
        f"{limited:.0f} refusals counted in crossmodal_rpc_requests_total",
    )
