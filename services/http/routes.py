"""The HTTP routes, read from the google.api.http annotations of the GatewayService in the protos.

The protos are the one source of truth: each rpc's HttpRule (and its additional_bindings) becomes a
`Route` at start-up, and the OpenAPI document is generated from the same list, so the served API and
its description cannot disagree. Path templates are the subset of google.api.http's syntax the protos
use: literal segments, `{field}` variables and a `:verb` suffix.

One deviation from http.proto, made on purpose and documented in gateway.proto: a path variable may
name a repeated field (`/v1/items/{ids}` for Get and Delete, which take a list of ids), and then binds
one element of it, so GET /v1/items/{id} fetches one item the way REST clients expect.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

from crossmodal.v1 import gateway_pb2

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"^\{([a-z_][a-z0-9_]*)(=\*)?\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9._~-]+$")


class RouteError(ValueError):
    """An annotation this service cannot serve; raised at start-up, naming the rpc."""


@dataclasses.dataclass(frozen=True)
class Route:
    """One HTTP binding of one rpc."""

    rpc: str  # the method's name, e.g. "Search"
    method: str  # upper-case HTTP method
    template: str  # the path template as written in the proto, e.g. "/v1/items/{ids}"
    path: str  # the aiohttp route path (same syntax for what the protos use)
    variables: tuple[str, ...]  # field names bound from the path
    body: str  # "*" (the whole request from the body) or "" (fields from the path and query)
    client_streaming: bool
    server_streaming: bool
    method_descriptor: descriptor.MethodDescriptor

    @property
    def full_method(self) -> str:
        """The gRPC method path, /crossmodal.v1.GatewayService/<rpc>."""
        return f"/{SERVICE.full_name}/{self.rpc}"

    @property
    def request_class(self) -> type[Message]:
        """The rpc's request message class."""
        return message_factory.GetMessageClass(self.method_descriptor.input_type)

    @property
    def response_class(self) -> type[Message]:
        """The rpc's response message class."""
        return message_factory.GetMessageClass(self.method_descriptor.output_type)


def parse_template(template: str) -> tuple[str, tuple[str, ...]]:
    """The aiohttp path and the variable names of a google.api.http path template (the subset we use)."""
    if not template.startswith("/"):
        raise RouteError(f"path template {template!r} does not start with /")
    segments = template[1:].split("/")
    verb = ""
    if ":" in segments[-1] and not segments[-1].startswith("{"):
        segments[-1], verb = segments[-1].split(":", 1)
        if not _LITERAL.match(verb):
            raise RouteError(f"path template {template!r}: bad verb {verb!r}")
    variables: list[str] = []
    parts: list[str] = []
    for segment in segments:
        match = _VARIABLE.match(segment)
        if match:
            variables.append(match.group(1))
            parts.append("{" + match.group(1) + "}")
        elif _LITERAL.match(segment):
            parts.append(segment)
        else:
            raise RouteError(f"path template {template!r}: unsupported segment {segment!r}")
    return "/" + "/".join(parts) + (f":{verb}" if verb else ""), tuple(variables)


def _bindings(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


def http_routes(service: descriptor.ServiceDescriptor = SERVICE) -> list[Route]:
    """Every HTTP binding of every annotated rpc of `service`, in declaration order."""
    routes = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for rule in _bindings(options.Extensions[annotations_pb2.http]):
            kind = rule.WhichOneof("pattern")
            if kind not in HTTP_METHODS:
                raise RouteError(f"{method.name}: unsupported HTTP pattern {kind!r}")
            template = getattr(rule, kind)
            path, variables = parse_template(template)
            fields = method.input_type.fields_by_name
            for name in variables:
                field = fields.get(name)
                if field is None or field.type != field.TYPE_STRING:
                    raise RouteError(f"{method.name}: path variable {name!r} is not a string field of the request")
            if rule.body not in ("", "*"):
                raise RouteError(f'{method.name}: body {rule.body!r} is not supported (use "*" or none)')
            streaming = method.client_streaming or method.server_streaming
            if streaming and (rule.body != "*" or kind != "post"):
                raise RouteError(f'{method.name}: a streaming rpc needs `post` with body "*" (NDJSON)')
            routes.append(
                Route(
                    rpc=method.name,
                    method=kind.upper(),
                    template=template,
                    path=path,
                    variables=variables,
                    body=rule.body,
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                    method_descriptor=method,
                )
            )
    return routes
