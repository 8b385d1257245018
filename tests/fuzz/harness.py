"""The fuzz harness: the running services, counted calls checked against the catalogue, and process resources."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossmodal.v1 import encoder_pb2_grpc, gateway_pb2_grpc, index_pb2_grpc
from tests.support import ServiceProcess

# Generated inputs sent, by "service.rpc"; the session asserts the total at the end.
SENT: Counter[str] = Counter()
MIN_TOTAL_INPUTS = 10_000
TIMEOUT = 60.0
# Shards the fuzz index process serves; any other number must get NOT_FOUND.
SHARDS = (0, 1)

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
        HealthCheck.differing_executors,
    ],
)


@dataclass
class Outcome:
    """What one call answered: its status code, message and (when OK) its response."""

    code: grpc.StatusCode
    message: str
    response: Any = None


@dataclass
class Env:
    """The services under fuzz and what the tests know about them."""

    processes: dict[str, ServiceProcess]
    model_id: str
    dim: int
    images: dict[str, bytes]
    known_ids: list[str]
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def channel(self, name: str) -> grpc.Channel:
        """A shared channel to the service `name` (gateway, text, image, index)."""
        if name not in self.channels:
            # The limit is raised so that messages over the servers' limit reach the servers.
            options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
            self.channels[name] = grpc.insecure_channel(self.processes[name].address, options=options)
        return self.channels[name]

    @property
    def gateway(self) -> gateway_pb2_grpc.GatewayServiceStub:
        """The public API."""
        return gateway_pb2_grpc.GatewayServiceStub(self.channel("gateway"))

    def encoder(self, name: str) -> encoder_pb2_grpc.EncoderServiceStub:
        """The text or image encoder."""
        return encoder_pb2_grpc.EncoderServiceStub(self.channel(name))

    @property
    def index(self) -> index_pb2_grpc.IndexServiceStub:
        """The index process serving SHARDS."""
        return index_pb2_grpc.IndexServiceStub(self.channel("index"))

    def close(self) -> None:
        """Close the shared channels."""
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()


def is_known(item_id: str) -> bool:
    """Whether a generated id would touch the known set that must survive the fuzz."""
    return item_id.startswith("known-")


def call(label: str, method: Callable[..., Any], request: Any, count: int = 1) -> Outcome:
    """Send one unary request (counted as `count` inputs under `label`) and return its outcome."""
    SENT[label] += count
    try:
        return Outcome(grpc.StatusCode.OK, "", method(request, timeout=TIMEOUT))
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")


def call_stream(label: str, method: Callable[..., Any], requests: list[Any]) -> Outcome:
    """Send a request stream (each message one input) and collect every response."""
    SENT[label] += max(1, len(requests))
    try:
        return Outcome(grpc.StatusCode.OK, "", list(method(iter(requests), timeout=TIMEOUT)))
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")


def raw_unary(env: Env, service: str, full_method: str, response_type: Any) -> Callable[..., Any]:
    """A unary method that sends bytes as they are (hand-built or invalid messages)."""
    return env.channel(service).unary_unary(
        full_method, request_serializer=lambda b: b, response_deserializer=response_type.FromString
    )


def raw_stream(env: Env, service: str, full_method: str, response_type: Any) -> Callable[..., Any]:
    """A bidi-streaming method that sends bytes as they are."""
    return env.channel(service).stream_stream(
        full_method, request_serializer=lambda b: b, response_deserializer=response_type.FromString
    )


def varint(value: int) -> bytes:
    """Protobuf varint of `value`; a negative one takes 10 bytes (two's complement, as int64 writes it)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A varint field (wire type 0): appended to a serialised message it overrides the field (last wins)."""
    return varint(number << 3) + varint(value)


def uint32_read(value: int) -> int:
    """What a uint32 field holds after parsing a varint of `value` (the low 32 bits)."""
    return value & 0xFFFFFFFF


@dataclass(frozen=True)
class Case:
    """One fuzz case as it ran, kept so that the leak check can run it again."""

    name: str
    examples: int
    strategy: st.SearchStrategy[Any]
    body: Callable[[Any], None]


CASES: list[Case] = []


def run_case(examples: int, strategy: st.SearchStrategy[Any], body: Callable[[Any], None]) -> None:
    """Run `body` on `examples` deterministic inputs drawn from `strategy` (and remember the case)."""
    CASES.append(Case(body.__qualname__.split(".")[0], examples, strategy, body))
    replay(examples, strategy, body)


def replay(examples: int, strategy: st.SearchStrategy[Any], body: Callable[[Any], None]) -> None:
    """Run `body` on `examples` deterministic inputs drawn from `strategy`."""

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def fuzz(value: Any) -> None:
        body(value)

    fuzz()


@dataclass(frozen=True)
class Resources:
    """RSS, threads and open fds of one process."""

    rss_kib: int
    hwm_kib: int
    threads: int
    fds: int


def resources(pid: int) -> Resources:
    """Read /proc/PID for `pid`."""
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return Resources(
        rss_kib=int(fields["VmRSS"].split()[0]),
        hwm_kib=int(fields["VmHWM"].split()[0]),
        threads=int(fields["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def snapshot_resources(env: Env) -> dict[str, Resources]:
    """Resources of every service process."""
    return {name: resources(proc.proc.pid) for name, proc in env.processes.items()}


def settle(env: Env, timeout: float = 5.0) -> dict[str, Resources]:
    """Resources once the thread counts stopped moving (worker pools wind down between calls)."""
    deadline = time.monotonic() + timeout
    last = snapshot_resources(env)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = snapshot_resources(env)
        if all(now[n].threads == last[n].threads and now[n].fds == last[n].fds for n in now):
            return now
        last = now
    return last
