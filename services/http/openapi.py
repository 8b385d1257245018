"""The OpenAPI 3.1 document of the HTTP API, generated from the protos' descriptors and http annotations.

Schemas follow protobuf's canonical JSON mapping: lowerCamel field names, 64-bit integers as strings,
bytes as base64 strings, enums by name, maps as objects. Routes come from `routes.http_routes`, the
list the service serves, so every annotated rpc is described; the HTTP-only routes (media, health,
the page) are added here by hand.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor

from crossmodal import __version__
from services.http.routes import SERVICE, Route

_SCALARS: dict[int, dict[str, Any]] = {
    descriptor.FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    descriptor.FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    descriptor.FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    descriptor.FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    descriptor.FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    descriptor.FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    descriptor.FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    descriptor.FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    descriptor.FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    descriptor.FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    descriptor.FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    descriptor.FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    descriptor.FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    descriptor.FieldDescriptor.TYPE_STRING: {"type": "string"},
    descriptor.FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: `code` is the gRPC status code number; the HTTP status follows from it.",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message"],
}
_ERROR = {
    "description": "The error, as google.rpc.Status",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
}


def _ref(message: descriptor.Descriptor) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{message.full_name}"}


def _field_schema(field: descriptor.FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single_schema(value, schemas)}
    single = _single_schema(field, schemas)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single_schema(field: descriptor.FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.enum_type is not None:
        return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
    if field.message_type is not None:
        _add_message(field.message_type, schemas)
        return _ref(field.message_type)
    return dict(_SCALARS[field.type])


def _add_message(message: descriptor.Descriptor, schemas: dict[str, Any]) -> None:
    if message.full_name in schemas:
        return
    schema: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    schemas[message.full_name] = schema  # before the fields: messages may refer to each other
    for field in message.fields:
        schema["properties"][field.json_name] = _field_schema(field, schemas)
    oneofs = [o for o in message.oneofs if not o.name.startswith("_")]
    if oneofs:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(f.json_name for f in o.fields)} ({o.name})" for o in oneofs
        )


def _operation(route: Route, operation_id: str, schemas: dict[str, Any]) -> dict[str, Any]:
    method = route.method_descriptor
    _add_message(method.input_type, schemas)
    _add_message(method.output_type, schemas)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": f"{SERVICE.full_name}.{route.rpc}",
        "x-grpc-method": route.full_method,
        "parameters": [],
        "responses": {"default": _ERROR},
    }
    fields = method.input_type.fields_by_name
    for name in route.variables:
        field = fields[name]
        note = " (one element of the repeated field)" if field.is_repeated else ""
        operation["parameters"].append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": f"`{name}`{note}",
            }
        )
    if route.body == "":
        for field in method.input_type.fields:
            if field.message_type is None and field.name not in route.variables:
                operation["parameters"].append(
                    {"name": field.name, "in": "query", "required": False, "schema": _field_schema(field, schemas)}
                )
    if route.client_streaming:
        operation["requestBody"] = {
            "required": True,
            "description": f"NDJSON: one {method.input_type.name} per line",
            "content": {"application/x-ndjson": {"schema": _ref(method.input_type)}},
        }
    elif route.body == "*":
        content: dict[str, Any] = {"application/json": {"schema": _ref(method.input_type)}}
        bytes_fields = [f.name for f in method.input_type.fields if f.type == f.TYPE_BYTES]
        if bytes_fields:
            content["multipart/form-data"] = {
                "schema": {
                    "type": "object",
                    "properties": {
                        "request": {"type": "string", "description": f"{method.input_type.name} as JSON"},
                        **{name: {"type": "string", "format": "binary"} for name in bytes_fields},
                    },
                }
            }
        operation["requestBody"] = {"required": True, "content": content}
    if route.client_streaming and route.request_class.DESCRIPTOR.name == "IngestRequest":
        operation["requestBody"]["content"]["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {
                    "id_prefix": {"type": "string"},
                    "metadata": {"type": "string", "description": "a JSON object of strings, given to every item"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                },
            }
        }
    response_type = "application/x-ndjson" if route.server_streaming else "application/json"
    description = (
        f"NDJSON: one {method.output_type.name} per line" if route.server_streaming else method.output_type.name
    )
    operation["responses"]["200"] = {
        "description": description,
        "content": {response_type: {"schema": _ref(method.output_type)}},
    }
    return operation


def _media_operation(summary: str, content_type: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}, *extra],
            "responses": {"200": {"description": summary, "content": {content_type: {}}}, "default": _ERROR},
        }
    }


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` and the HTTP-only routes."""
    schemas: dict[str, Any] = {"google.rpc.Status": STATUS_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for route in routes:
        # The rpc's name for its first binding, then Get_2, Get_3 ... for its additional_bindings.
        seen[route.rpc] = seen.get(route.rpc, 0) + 1
        operation_id = route.rpc if seen[route.rpc] == 1 else f"{route.rpc}_{seen[route.rpc]}"
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route, operation_id, schemas)
    size = {
        "name": "size",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 16, "maximum": 2048},
    }
    paths["/v1/items/{id}/thumbnail"] = _media_operation(
        "A JPEG thumbnail of the item's image file", "image/jpeg", [size]
    )
    paths["/v1/items/{id}/media"] = _media_operation(
        "The item's image, video or audio file (Range requests work)", "*/*", []
    )
    for path, summary in (("/healthz", "Liveness"), ("/readyz", "Readiness: the gateway is SERVING")):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}, "503": _ERROR}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crossmodal HTTP/JSON API",
            "version": __version__,
            "description": "The gRPC API of crossmodal.v1.GatewayService over HTTP, mapped by the protos' "
            "google.api.http annotations, in protobuf's canonical JSON. Send `Authorization: Bearer <key>` when "
            "the gateway has API keys, and optionally `X-Request-Id`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
    }
