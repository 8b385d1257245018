"""Server bootstrap shared by every service: health, reflection, interceptors, metrics and graceful drain.

A service implements `Service`: it registers its servicers, loads what it needs in `start()` (the
server already answers health checks with NOT_SERVING meanwhile) and flushes state in `stop()`. `serve`
runs it until SIGTERM or SIGINT, then turns health to NOT_SERVING, stops accepting calls, lets the
in-flight ones finish within the grace period, and only then calls `stop()`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from crossmodal import __version__
from services.common.channels import server_options
from services.common.config import ServerConfig
from services.common.interceptors import FaultInjectionInterceptor, ObservabilityInterceptor
from services.common.logs import configure_logging
from services.common.metrics import BUILD_INFO, start_metrics_server

log = structlog.get_logger("server")


class Service(Protocol):
    """What a crossmodal service provides to the shared bootstrap."""

    name: str
    # Optional: a service may also define `interceptors`, a sequence of extra grpc.aio.ServerInterceptor.

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add servicers to `server`; return the full names of the gRPC services added."""
        ...

    async def start(self) -> None:
        """Load models or shards; the service is reported SERVING once this returns."""
        ...

    async def stop(self) -> None:
        """Flush state after the server drained its in-flight calls."""
        ...


class RunningServer:
    """A started gRPC server with its health servicer and bound ports."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        port: int,
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.service_names = list(service_names)
        self.port = port

    async def set_serving(self, serving: bool) -> None:
        """Report every service of this server (and the overall "" entry) as SERVING or NOT_SERVING."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def drain(self, grace: float) -> None:
        """Report NOT_SERVING, stop accepting calls and wait up to `grace` seconds for in-flight ones."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(service: Service, config: ServerConfig) -> RunningServer:
    """Build, bind and start the gRPC server for `service`; health starts as NOT_SERVING."""
    # Observability runs first so calls refused by a service's own interceptors are counted and logged.
    observability = ObservabilityInterceptor(
        slow_seconds=config.rpc_log_slow_ms / 1000, log_debug=config.log_level == "debug"
    )
    interceptors: list[grpc.aio.ServerInterceptor] = [observability, *getattr(service, "interceptors", ())]
    if config.fault_delay_ms and config.fault_methods:
        log.warning("fault injection enabled", delay_ms=config.fault_delay_ms, methods=config.fault_methods)
        interceptors.append(FaultInjectionInterceptor(config.fault_delay_ms, config.fault_methods))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(config.max_message_bytes),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs or None,
    )
    names = list(service.register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{config.host}:{config.port}" if ":" not in config.host else f"[{config.host}]:{config.port}"
    tls = config.server_tls
    if tls is not None:
        from services.common.tls import server_credentials

        port = server.add_secure_port(address, server_credentials(tls))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind the gRPC server to {address}")
    running = RunningServer(server, health_servicer, names, port)
    await running.set_serving(False)
    await server.start()
    return running


def write_ready_file(path: Path, port: int, metrics_port: int) -> None:
    """Atomically write the ready file (port, metrics port, pid) that supervisors and tests wait for."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"port": port, "metrics_port": metrics_port, "pid": os.getpid()}))
    tmp.replace(path)


async def serve(service: Service, config: ServerConfig) -> None:
    """Run `service` until SIGTERM/SIGINT, then drain gracefully and flush its state."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)

    metrics_port = -1
    if config.metrics_port >= 0:
        metrics_port = start_metrics_server(config.metrics_port, config.host)
    BUILD_INFO.labels(service.name, __version__).set(1)
    running = await start_server(service, config)
    log.info("listening", port=running.port, metrics_port=metrics_port, tls=config.server_tls is not None)
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop_requested.wait())
    # A start that waits on unreachable backends must not make the process deaf to SIGTERM.
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("stopped before becoming ready")
        await running.drain(0)
        return
    stopping.cancel()
    try:
        starting.result()
    except Exception:
        log.exception("start failed")
        await running.drain(0)
        raise
    await running.set_serving(True)
    if config.ready_file is not None:
        write_ready_file(config.ready_file, running.port, metrics_port)
    log.info("serving", port=running.port, metrics_port=metrics_port)

    await stop_requested.wait()
    log.info("draining", grace_seconds=config.grace_seconds)
    await running.drain(config.grace_seconds)
    await service.stop()
    log.info("stopped")


def run_service(service: Service, config: ServerConfig) -> int:
    """Configure logging and run `service` to completion; the process exit status."""
    configure_logging(config.log_level, config.log_format, service.name)
    # A crash in native code (gRPC core, onnxruntime, usearch) then leaves every thread's stack in the log.
    faulthandler.enable()
    try:
        asyncio.run(serve(service, config))
    except Exception as exc:
        structlog.get_logger("server").error("fatal", error=str(exc))
        return 1
    return 0
