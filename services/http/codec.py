"""Protobuf's canonical JSON mapping, made strict where json_format is lenient.

`json_format.Parse` refuses unknown fields, wrong types and out-of-range numbers, but decodes any
text as base64 ("!!!" becomes empty bytes): a caller who sent a broken image would search with
nothing. `check_base64` walks the JSON beside the message descriptor and refuses any bytes field
whose value is not base64 (standard or URL-safe alphabet, padding optional, as the mapping allows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from services.http.errors import HttpError

INVALID = grpc.StatusCode.INVALID_ARGUMENT
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
M = TypeVar("M", bound=Message)


def _bad(message: str) -> HttpError:
    return HttpError(INVALID, message)


def _field_json_names(message_descriptor: Any) -> dict[str, descriptor.FieldDescriptor]:
    fields: dict[str, descriptor.FieldDescriptor] = {}
    for field in message_descriptor.fields:
        fields[field.name] = field
        fields[field.json_name] = field
    return fields


def check_base64(value: Any, message_descriptor: Any, where: str = "") -> None:
    """Refuse any bytes field of the JSON object `value` that is not valid base64 (recursively)."""
    if not isinstance(value, Mapping):
        return
    fields = _field_json_names(message_descriptor)
    for key, item in value.items():
        field = fields.get(key)
        if field is None or item is None:
            continue  # unknown fields are refused by json_format with a better message
        path = f"{where}{key}"
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.type == field.TYPE_BYTES:
            for n, text in enumerate(item if _is_list(field, item) else [item]):
                if isinstance(text, str) and (not _BASE64.match(text) or len(text.rstrip("=")) % 4 == 1):
                    suffix = f"[{n}]" if _is_list(field, item) else ""
                    raise _bad(f"{path}{suffix} is not valid base64: encode the file's bytes with base64")
        elif field.message_type is not None and not is_map:
            for element in item if _is_list(field, item) else [item]:
                check_base64(element, field.message_type, f"{path}.")


def _is_list(field: descriptor.FieldDescriptor, item: Any) -> bool:
    return field.is_repeated and isinstance(item, list)


def parse_json(data: bytes, message: M, what: str = "the request body") -> M:
    """Fill `message` from JSON text in the canonical mapping; HttpError(INVALID_ARGUMENT) saying what is wrong."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"{what} is not valid JSON: {exc}") from None
    return parse_value(value, message, what)


def parse_value(value: Any, message: M, what: str = "the request body") -> M:
    """Fill `message` from an already decoded JSON value (an object)."""
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object, not {type(value).__name__}")
    try:
        check_base64(value, message.DESCRIPTOR)
    except HttpError as exc:
        raise _bad(f"{what}: {exc.message}") from None
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise _bad(f"{what}: {exc}") from None
    return message


def bind_fields(message: Message, values: Mapping[str, Sequence[str]], where: str) -> None:
    """Set top-level scalar fields of `message` from path or query strings (a repeated field takes them all)."""
    fields = _field_json_names(message.DESCRIPTOR)
    as_json: dict[str, Any] = {}
    for key, texts in values.items():
        field = fields.get(key)
        if field is None or (field.message_type is not None):
            names = sorted({f.name for f in message.DESCRIPTOR.fields if f.message_type is None})
            raise _bad(f"{where} parameter {key!r} is not a field of {message.DESCRIPTOR.name}; known: {names}")
        converted = [_scalar(field, text, key) for text in texts]
        if field.is_repeated:
            as_json[field.json_name] = converted
        elif len(converted) > 1:
            raise _bad(f"{where} parameter {key!r} is given {len(converted)} times; it takes one value")
        else:
            as_json[field.json_name] = converted[0]
    if as_json:
        message.MergeFrom(parse_value(as_json, message.__class__(), f"the {where} parameters"))


def _scalar(field: descriptor.FieldDescriptor, text: str, key: str) -> Any:
    if field.type == field.TYPE_BOOL:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise _bad(f"parameter {key!r} must be true or false, not {text!r}")
    return text  # json_format accepts numbers and enum names as strings


def to_json(message: Message) -> dict[str, Any]:
    """`message` in the canonical JSON mapping, with fields at their default values included."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
