"""The HTTP handlers: each annotated rpc as JSON (or NDJSON when it streams), media, health, OpenAPI and the page.

A unary route builds the rpc's request from the JSON body (or a multipart upload), the path and the
query, makes one gateway call and answers its reply in the canonical JSON mapping. A streaming route
(Ingest, IngestVideo) reads NDJSON, one request message per line, and feeds the gateway's stream as the
lines arrive; Ingest's acknowledgements go back as NDJSON as they come. A first line that does not parse
is refused with 400 before anything is sent to the gateway; a later bad line ends the stream: the lines
before it are acknowledged as usual and a last line {"error": <google.rpc.Status>} says what was wrong.
IngestVideo, which stores nothing until its stream ends, is cancelled instead, so a bad frame stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import grpc
import structlog
from aiohttp import BodyPartReader, web
from google.protobuf.message import Message

from crossmodal.v1 import gateway_pb2
from services.common.interceptors import REQUEST_ID, REQUEST_ID_HEADER, request_id_from
from services.http.codec import bind_fields, parse_json, to_json
from services.http.config import HttpConfig
from services.http.errors import HttpError, error_of, error_response, http_only, status_body
from services.http.media import MediaLibrary
from services.http.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, INGEST_LINES, THUMBNAILS
from services.http.openapi import openapi_document
from services.http.routes import Route, http_routes
from services.http.upstream import Gateway

log = structlog.get_logger("http")
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NDJSON = "application/x-ndjson"
JSON_TYPES = ("application/json", "")
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Every asset the page uses is served from here: no CDN, no inline script, no third-party origin.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}
READY_CACHE_SECONDS = 1.0
# Metric labels take these methods as they are and any other as OTHER: a client may send any token as its
# method, and every distinct label value is a new time series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def _ndjson_line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


class Api:
    """The aiohttp application of the HTTP service, around one gateway channel."""

    def __init__(self, config: HttpConfig, gateway: Gateway, media: MediaLibrary) -> None:
        self.config = config
        self.gateway = gateway
        self.media = media
        self.routes = http_routes()
        self.ready = False  # set once the gateway answered SERVING; cleared when draining
        self._ready_checked = (0.0, False)
        self._lookup = next(r for r in self.routes if r.rpc == "Get")
        self._openapi = json.dumps(openapi_document(self.routes)).encode()
        self._static = _load_static()

    # --- the application --------------------------------------------------------------------------------

    def application(self) -> web.Application:
        """The aiohttp application: every annotated route, media, health, OpenAPI and the page."""
        # client_max_size bounds any body read in one piece by aiohttp itself; ours are read with the same bound.
        app = web.Application(middlewares=[self._observe], client_max_size=self.config.max_body_bytes)
        for route in self.routes:
            handler = self._stream_handler(route) if route.client_streaming else self._unary_handler(route)
            app.router.add_route(route.method, route.path, handler)
        app.router.add_get("/v1/items/{id}/thumbnail", self.thumbnail)
        app.router.add_get("/v1/items/{id}/media", self.media_file)
        app.router.add_get("/v1/openapi.json", self.openapi)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)
        app.on_response_prepare.append(_add_headers)
        return app

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id, header limits, the JSON error body, metrics by route and status, and the log line."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request_id = request_id_from([(REQUEST_ID_HEADER, request.headers.get(REQUEST_ID_HEADER, ""))])
        request["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        in_flight = HTTP_IN_FLIGHT.labels(route)
        in_flight.inc()
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            self._check_headers(request)
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure gets its status from the one table
            if request.get("_prepared_response") is not None:
                raise  # a stream was already answering: it ends (its handler wrote the error line it could)
            error = error_of(exc)
            response = error_response(error, request_id)
        finally:
            elapsed = time.perf_counter() - started
            in_flight.dec()
            status = response.status if response is not None else 499
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_DURATION.labels(route, method).observe(elapsed)
            self._log(request, route, status, elapsed)
            REQUEST_ID.reset(token)
            structlog.contextvars.unbind_contextvars("request_id")
        return response

    def _log(self, request: web.Request, route: str, status: int, elapsed: float) -> None:
        quiet = route in ("/healthz", "/readyz", "/static/{name}")
        if status >= 500:
            emit: Any = log.warning
        elif status >= 400 or elapsed * 1000 >= self.config.server.rpc_log_slow_ms:
            emit = log.info
        else:
            emit = log.debug if not quiet else None
        if emit is not None:
            emit("http", route=route, method=request.method, status=status, duration_ms=round(elapsed * 1000, 3))

    def _check_headers(self, request: web.Request) -> None:
        headers = request.raw_headers
        if len(headers) > self.config.max_headers:
            raise http_only(431, f"{len(headers)} request headers; the limit is {self.config.max_headers}")
        size = sum(len(name) + len(value) for name, value in headers)
        if size > self.config.max_header_bytes:
            raise http_only(431, f"request headers take {size} bytes; the limit is {self.config.max_header_bytes}")

    # --- reading requests -------------------------------------------------------------------------------

    async def _chunk(self, read: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(read, self.config.body_timeout_seconds)
        except TimeoutError:
            raise http_only(
                408, f"the request body stalled for {self.config.body_timeout_seconds:g}s; send it without pauses"
            ) from None

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise http_only(413, f"the body has {request.content_length} bytes; the limit is {limit}")
        data = bytearray()
        while chunk := await self._chunk(request.content.readany()):
            data += chunk
            if len(data) > limit:
                raise http_only(413, f"the body is larger than the limit of {limit} bytes")
        return bytes(data)

    async def _read_part(self, part: BodyPartReader) -> bytes:
        limit = self.config.max_body_bytes
        data = bytearray()
        while chunk := await self._chunk(part.read_chunk()):
            data += chunk
            if len(data) > limit:
                raise http_only(413, f"the uploaded file {part.filename or part.name!r} is larger than {limit} bytes")
        return bytes(data)

    async def _ndjson_lines(self, request: web.Request) -> AsyncIterator[tuple[int, bytes]]:
        """(line number, line) of an NDJSON body as it arrives; blank lines are skipped."""
        limit = self.config.max_body_bytes
        buffer = bytearray()
        number = 0
        while chunk := await self._chunk(request.content.readany()):
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                number += 1
                if len(line) > limit:
                    raise http_only(413, f"line {number} has {len(line)} bytes; the limit is {limit}")
                if line.strip():
                    yield number, line
            if len(buffer) > limit:
                raise http_only(413, f"line {number + 1} is longer than the limit of {limit} bytes")
        if bytes(buffer).strip():
            yield number + 1, bytes(buffer)

    async def _fill_from_multipart(self, request: web.Request, message: Message) -> None:
        """A multipart body: an optional `request` part (JSON) and files for the request's bytes fields (`image`)."""
        fields = message.DESCRIPTOR.fields_by_name
        reader = await request.multipart()
        files: dict[str, bytes] = {}
        while (part := await self._chunk(reader.next())) is not None:
            if not isinstance(part, BodyPartReader):
                raise HttpError(INVALID, "nested multipart bodies are not supported")
            name = part.name or ""
            if name == "request":
                parse_json(await self._read_part(part), message, "the `request` part")
            elif name in fields and fields[name].type == fields[name].TYPE_BYTES:
                files[name] = await self._read_part(part)
            else:
                raise HttpError(INVALID, f"unexpected multipart part {name!r}: send `request` (JSON) and file parts")
        for name, data in files.items():
            setattr(message, name, data)

    async def _fill(self, request: web.Request, route: Route, message: Message) -> None:
        """Build the request message from body, path and query as the route's HttpRule binds them."""
        content_type = request.content_type
        if route.body == "*":
            if content_type.startswith("multipart/"):
                await self._fill_from_multipart(request, message)
            elif content_type in JSON_TYPES:
                parse_json(await self._read_body(request), message)
            else:
                raise http_only(415, f"send the body as application/json (or multipart/form-data), not {content_type}")
            if request.query:
                raise HttpError(
                    INVALID, f"{route.method} {route.template} takes its fields in the JSON body, not the query"
                )
        else:
            if request.body_exists and (await self._read_body(request)).strip():
                raise HttpError(INVALID, f"{route.method} {route.template} takes no body")
            bind_fields(message, {k: request.query.getall(k) for k in request.query}, "query")
        bind_fields(message, {name: [request.match_info[name]] for name in route.variables}, "path")

    # --- unary rpcs -------------------------------------------------------------------------------------

    def _unary_handler(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            message = route.request_class()
            await self._fill(request, route, message)
            reply = await self.gateway.unary(route, message, request.headers.get("Authorization"))
            # GET of one resource by its path: a REST client expects 404 when it is not there.
            if route.method == "GET" and route.variables and list(getattr(reply, "missing", ())):
                raise HttpError(
                    grpc.StatusCode.NOT_FOUND, f"no item with id {request.match_info[route.variables[0]]!r}"
                )
            return web.json_response(to_json(reply))

        handle.__doc__ = f"{route.method} {route.template}: the {route.rpc} rpc in JSON."
        return handle

    # --- streaming rpcs ---------------------------------------------------------------------------------

    async def _messages(self, request: web.Request, route: Route) -> AsyncIterator[Message]:
        """The request messages of a streaming route, from NDJSON lines or (Ingest only) uploaded image files."""
        content_type = request.content_type
        if content_type.startswith("multipart/") and route.request_class is gateway_pb2.IngestRequest:
            async for item in self._uploaded_items(request):
                yield item
            return
        if content_type not in (NDJSON, "application/jsonl", "application/json", ""):
            raise http_only(415, f"send {route.template} as {NDJSON} (one JSON object per line), not {content_type}")
        async for number, line in self._ndjson_lines(request):
            yield parse_json(line, route.request_class(), f"line {number}")

    async def _uploaded_items(self, request: web.Request) -> AsyncIterator[Message]:
        """Ingest items from a multipart upload: each `image` file is one item whose id is its file name.

        Optional parts before the files: `id_prefix` (text put before each file name), `metadata` (a JSON
        object of strings given to every item) and `tags` (one tag per part).
        """
        reader = await request.multipart()
        prefix, metadata, tags = "", dict[str, str](), list[str]()
        while (part := await self._chunk(reader.next())) is not None:
            if not isinstance(part, BodyPartReader):
                raise HttpError(INVALID, "nested multipart bodies are not supported")
            name = part.name or ""
            if name == "image":
                if not part.filename:
                    raise HttpError(INVALID, "an `image` part needs a file name: it becomes the item's id")
                item = gateway_pb2.IngestRequest(id=prefix + part.filename, image=await self._read_part(part))
                item.metadata.update({**metadata, "filename": part.filename})
                item.tags.extend(tags)
                yield item
            elif name in ("id_prefix", "metadata", "tags"):
                text = (await self._read_part(part)).decode("utf-8", errors="strict")
                if name == "id_prefix":
                    prefix = text
                elif name == "tags":
                    tags.append(text)
                else:
                    holder = parse_json(text.encode(), gateway_pb2.IngestRequest(), "the `metadata` part")
                    metadata = dict(holder.metadata)
            else:
                raise HttpError(
                    INVALID,
                    f"unexpected multipart part {name!r}: send `image` files (and "
                    "optionally `id_prefix`, `metadata`, `tags` before them)",
                )

    def _stream_handler(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            messages = aiter(self._messages(request, route))
            try:
                first = await anext(messages)  # refused here, before any call, when it does not parse
            except StopAsyncIteration:
                raise HttpError(
                    INVALID, f"{route.template} needs at least one line (one JSON object per line)"
                ) from None
            call = self.gateway.stream(route, request.headers.get("Authorization"))
            refused: list[HttpError] = []

            async def feed() -> None:
                try:
                    await call.write(first)
                    INGEST_LINES.labels(route.rpc).inc()
                    async for message in messages:
                        await call.write(message)
                        INGEST_LINES.labels(route.rpc).inc()
                except HttpError as exc:
                    refused.append(exc)
                    if not route.server_streaming:
                        call.cancel()  # nothing is stored before the stream ends: a bad part stores nothing
                        return
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    return  # the call ended; its status is what the reads report
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    await call.done_writing()

            feeder = asyncio.create_task(feed())
            try:
                if not route.server_streaming:
                    return await self._one_reply(call, feeder, refused)
                return await self._stream_replies(request, call, feeder, refused)
            finally:
                if not feeder.done():
                    feeder.cancel()
                    call.cancel()

        handle.__doc__ = f"POST {route.template}: the {route.rpc} stream as NDJSON."
        return handle

    async def _one_reply(self, call: Any, feeder: asyncio.Task[None], refused: list[HttpError]) -> web.StreamResponse:
        try:
            reply = await call
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            # The feeder cancels the call when a part does not parse (and says why in `refused` first);
            # any other cancellation or failure goes on up.
            if refused:
                raise refused[0] from None
            raise
        await feeder
        return web.json_response(to_json(reply))

    async def _stream_replies(
        self, request: web.Request, call: Any, feeder: asyncio.Task[None], refused: list[HttpError]
    ) -> web.StreamResponse:
        # The status is known once the first acknowledgement (or the call's error) arrives: a refused call
        # (no key, over its rate) still gets its own HTTP status.
        try:
            reply = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise await _final_status(call, exc) from None
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        request["_prepared_response"] = response
        try:
            while reply is not grpc.aio.EOF:
                await response.write(_ndjson_line(to_json(reply)))
                reply = await call.read()
        except grpc.aio.AioRpcError as exc:
            error = error_of(exc)
            await response.write(_ndjson_line({"error": status_body(error.code, error.message)}))
        await feeder
        if refused:
            await response.write(_ndjson_line({"error": status_body(refused[0].code, refused[0].message)}))
        await response.write_eof()
        return response

    # --- media ------------------------------------------------------------------------------------------

    async def _media_path(self, request: web.Request) -> tuple[Any, str]:
        item_id = request.match_info["id"]
        reply = await self.gateway.unary(
            self._lookup, gateway_pb2.GetRequest(ids=[item_id]), request.headers.get("Authorization")
        )
        if not reply.items:
            raise HttpError(grpc.StatusCode.NOT_FOUND, f"no item with id {item_id!r}")
        return self.media.resolve(item_id, reply.items[0].metadata.get("path"))

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/items/{id}/thumbnail?size=N: a JPEG thumbnail of the image file a stored item names."""
        size_text = request.query.get("size", str(self.config.thumbnail_size))
        if not size_text.isdigit() or not 16 <= int(size_text) <= 2048:
            raise HttpError(INVALID, f"size must be a whole number of pixels from 16 to 2048, not {size_text!r}")
        path, kind = await self._media_path(request)
        if not kind.startswith("image/"):
            raise HttpError(grpc.StatusCode.NOT_FOUND, "no thumbnail of a video or audio file: play /media instead")
        loop = asyncio.get_running_loop()
        data, cached = await loop.run_in_executor(
            None, self.media.thumbnail, path, request.match_info["id"], int(size_text)
        )
        THUMBNAILS.labels("hit" if cached else "miss").inc()
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    async def media_file(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/items/{id}/media: the image, video or audio file a stored item names (Range requests work)."""
        path, kind = await self._media_path(request)
        return web.FileResponse(
            path,
            headers={"Content-Type": kind, "Content-Disposition": "inline", "Cache-Control": "private, max-age=300"},
        )

    # --- health, description and the page ----------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.StreamResponse:
        """Liveness: the process answers."""
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.StreamResponse:
        """Readiness: started, not draining, and the gateway reports SERVING (checked at most once a second)."""
        now = time.monotonic()
        checked_at, serving = self._ready_checked
        if now - checked_at >= READY_CACHE_SECONDS:
            serving = await self.gateway.serving()
            self._ready_checked = (now, serving)
        if not serving:
            raise HttpError(
                grpc.StatusCode.UNAVAILABLE, f"not ready: the gateway at {self.gateway.address} is not SERVING"
            )
        if not self.ready:
            raise HttpError(grpc.StatusCode.UNAVAILABLE, "not ready: starting or draining")
        return web.json_response({"status": "ready"})

    async def openapi(self, _request: web.Request) -> web.StreamResponse:
        """The OpenAPI 3.1 document of this API, generated from the protos at start-up."""
        return web.Response(body=self._openapi, content_type="application/json")

    async def page(self, _request: web.Request) -> web.StreamResponse:
        """The search page."""
        return self._asset("index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        """One of the page's own assets, by name from the set loaded at start-up (never a path on disk)."""
        return self._asset(request.match_info["name"])

    def _asset(self, name: str) -> web.StreamResponse:
        asset = self._static.get(name)
        if asset is None:
            raise HttpError(grpc.StatusCode.NOT_FOUND, f"no asset {name!r}")
        body, content_type = asset
        return web.Response(
            body=body, content_type=content_type, charset="utf-8", headers={"Cache-Control": "no-cache"}
        )


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (they ship in the wheel and the image)."""
    folder = resources.files("services.http") / "static"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            assets[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    if "index.html" not in assets:
        raise RuntimeError("services/http/static/index.html is missing from the package")
    return assets


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: the request id and the security headers."""
    request_id = request.get("request_id")
    if request_id is not None:
        response.headers.setdefault("X-Request-Id", request_id)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def _final_status(call: Any, error: grpc.aio.AioRpcError) -> Exception:
    """The call's own status when a read failed with INTERNAL only because a write raced the server's answer.

    When the gateway refuses a stream at once (no key, over its rate) while the first line is being written,
    grpc's read can fail with INTERNAL ("Internal error from Core", seen about once in six runs on a loaded
    machine) although the call ended with the gateway's status; the call's final status is the one to answer.
    """
    if error.code() != grpc.StatusCode.INTERNAL:
        return error
    code = await call.code()
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.OK):
        return error
    return HttpError(code, await call.details() or code.name)
