"""Run as a subprocess by test_keepalive: idle channels to two servers, then report what each saw.

One server has the services' options, one only the options channels use (gRPC's default ping
policy). Both channels use the services' client keepalive (a ping every 20 s, also when idle).
grpc core logs a received GOAWAY to stderr, which the test reads.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.channels import channel_options, open_channel, server_options


async def main(idle_seconds: float) -> None:
    """Call each server, stay idle, call again; print each channel's state before the second call."""
    servers, channels = [], []
    for name, options in (("services", server_options(1 << 20)), ("default", channel_options(1 << 20))):
        server = grpc.aio.server(options=options)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = open_channel(f"127.0.0.1:{port}", max_message_bytes=1 << 20)
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
    asyncio.run(main(float(sys.argv[1])))
