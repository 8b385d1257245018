"""Run as a subprocess by test_keepalive: idle channels to two servers, then report what each saw.

One server has the services' options, one only the options channels use (gRPC's default ping
policy). Both channels use the services' client options. The ping intervals in the options are
divided by the factor given, so that a minute of the real schedule passes in seconds while the
option keys and the ratio between client and server intervals stay the services' own; the ack
timeout is not, so a slow machine cannot fake a failure. grpc core logs a received GOAWAY to
stderr, which the test reads.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.channels import channel_options, server_options

INTERVALS = {"grpc.keepalive_time_ms", "grpc.http2.min_ping_interval_without_data_ms"}


def scaled(options: list[tuple[str, int]], factor: int) -> list[tuple[str, int]]:
    """The options with the ping intervals divided by `factor`."""
    return [(key, value // factor if key in INTERVALS else value) for key, value in options]


async def main(idle_seconds: float, factor: int) -> None:
    """Call each server, stay idle, call again; print each channel's state before the second call."""
    servers, channels = [], []
    client_options = scaled(channel_options(1 << 20), factor)
    for name, options in (("services", server_options(1 << 20)), ("default", channel_options(1 << 20))):
        server = grpc.aio.server(options=scaled(options, factor))
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options)
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        print(f"{name} port {port}", flush=True)
        servers.append(server)
        channels.append((name, channel))
    await asyncio.sleep(idle_seconds)
    for name, channel in channels:
        print(f"{name} state {channel.get_state().name}", flush=True)
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        await channel.close()
    for server in servers:
        await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), int(sys.argv[2])))
