"""The HTTP service's life cycle: listen, wait for the gateway, serve until SIGTERM, then drain.

It mirrors the gRPC services' (services/common/server.py): /readyz says 503 until the gateway reports
SERVING and again from the moment SIGTERM arrives; the listener then stops taking connections, requests
in flight get up to CROSSMODAL_GRACE_SECONDS to finish, and only then is the gateway channel closed.
"""

from __future__ import annotations

import asyncio
import signal
import ssl

import structlog
from aiohttp import web

from crossmodal import __version__
from services.common.logs import configure_logging
from services.common.metrics import BUILD_INFO, start_metrics_server
from services.common.server import write_ready_file
from services.http.config import HttpConfig
from services.http.handlers import Api
from services.http.media import MediaLibrary
from services.http.upstream import Gateway

log = structlog.get_logger("http")
NAME = "http"
# aiohttp's parser refuses (with its own plain-text 400, closing the connection) what is far past the limits
# the middleware answers with a JSON 431: this many times them.
PARSER_HEADROOM = 4
GATEWAY_POLL_SECONDS = 0.2


class HttpService:
    """The HTTP/JSON API and search page, in front of one gateway."""

    name = NAME

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        server = config.server
        self.gateway = Gateway(
            config.gateway, server.client_tls, server.max_message_bytes, config.gateway_timeout_seconds
        )
        self.api = Api(config, self.gateway, MediaLibrary(config.media_roots, config.thumbnail_cache_entries))
        self.runner: web.AppRunner | None = None
        self.port = 0

    def _ssl_context(self) -> ssl.SSLContext | None:
        server = self.config.server
        if server.tls_cert_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
        if server.tls_client_ca_file is not None:
            context.load_verify_locations(server.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def listen(self) -> int:
        """Start the HTTP listener (readiness still false); the bound port."""
        config = self.config
        self.runner = web.AppRunner(
            self.api.application(),
            handle_signals=False,
            access_log=None,  # one structured line per request comes from the middleware instead
            shutdown_timeout=config.server.grace_seconds,
            keepalive_timeout=config.idle_timeout_seconds,
            max_headers=config.max_headers * PARSER_HEADROOM,
            max_field_size=config.max_header_bytes * PARSER_HEADROOM,
            max_line_size=config.max_header_bytes * PARSER_HEADROOM,
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, config.server.host, config.server.port, ssl_context=self._ssl_context())
        await site.start()
        self.port = int(self.runner.addresses[0][1])  # the bound port, also when port 0 picked a free one
        return self.port

    async def wait_for_gateway(self) -> None:
        """Return once the gateway reports SERVING, then report ready."""
        waited = 0.0
        while not await self.gateway.serving():
            if waited == 0.0:
                log.info("waiting for the gateway", gateway=self.config.gateway)
            await asyncio.sleep(GATEWAY_POLL_SECONDS)
            waited += GATEWAY_POLL_SECONDS
        self.api.ready = True

    async def stop(self) -> None:
        """Not ready; stop listening; let requests in flight finish within the grace period; close the channel."""
        self.api.ready = False
        if self.runner is not None:
            await self.runner.cleanup()
        await self.gateway.close()


async def serve(config: HttpConfig) -> None:
    """Run the HTTP service until SIGTERM/SIGINT, then drain."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    server = config.server
    metrics_port = start_metrics_server(server.metrics_port, server.host) if server.metrics_port >= 0 else -1
    BUILD_INFO.labels(NAME, __version__).set(1)
    service = HttpService(config)
    port = await service.listen()
    log.info(
        "listening", port=port, metrics_port=metrics_port, gateway=config.gateway, tls=server.tls_cert_file is not None
    )
    waiting = asyncio.ensure_future(service.wait_for_gateway())
    stopping = asyncio.ensure_future(stop_requested.wait())
    # A gateway that never comes up must not make the process deaf to SIGTERM.
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if waiting.done():
        if server.ready_file is not None:
            write_ready_file(server.ready_file, port, metrics_port)
        log.info("serving", port=port, metrics_port=metrics_port, media_roots=[str(r) for r in config.media_roots])
        await stop_requested.wait()
    else:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    log.info("draining", grace_seconds=server.grace_seconds)
    await service.stop()
    log.info("stopped")


def run(config: HttpConfig) -> int:
    """Configure logging and run the service to completion; the process exit status."""
    configure_logging(config.server.log_level, config.server.log_format, NAME)
    try:
        asyncio.run(serve(config))
    except Exception as exc:
        log.error("fatal", error=str(exc))
        return 1
    return 0
