"""The documented status of every public RPC for every class of hostile input the fuzz tests send.

Every response the fuzz tests get must carry a code of its class's set below; error codes come with a
non-empty message. UNKNOWN and INTERNAL are documented nowhere: either one is a bug. "call" is the
status of the RPC; "item" is the per-item `ItemStatus.code` inside a successful Ingest, Encode
or UpsertVectors reply.

| RPC | Input class | Call status | Item status |
|---|---|---|---|
| every RPC | undecodable bytes: bad wire format, invalid UTF-8 in a string | INVALID_ARGUMENT | - |
| every RPC | random bytes that happen to parse | as for the RPC below | - |
| every RPC | message over CROSSMODAL_MAX_MESSAGE_BYTES | RESOURCE_EXHAUSTED | - |
| Search | vector: wrong dim, empty, NaN/Inf, all zero, not normalisable in float32 | INVALID_ARGUMENT | - |
| Search | text: empty or blank, over CROSSMODAL_MAX_TEXT_CHARS | INVALID_ARGUMENT | - |
| Search | text: other unicode (combining, RTL, zero-width, emoji, NUL) | OK | - |
| Search | image: empty, random, truncated or corrupt bytes, huge-dimension header | INVALID_ARGUMENT | - |
| Search | image: real PNG/JPEG/WebP/GIF/BMP/TIFF (or a truncation that decodes) | OK | - |
| Search | like_id: empty or over 256 bytes / not stored / stored | INVALID_ARGUMENT / NOT_FOUND / OK | - |
| Search | k over CROSSMODAL_MAX_K, 2^32-1, negative (read as 2^32-n) | INVALID_ARGUMENT | - |
| Search | k 0 (default) or 1..MAX_K, with a valid query | OK | - |
| Search | target not a Modality (5, -1, 2^31-1) | INVALID_ARGUMENT | - |
| Search | target MODALITY_AUDIO, valid otherwise, on a cluster without an audio encoder | FAILED_PRECONDITION | - |
| Search | filter: key not 1-128 B, 0 or > 64 values, a value > 1 KiB, > 16 clauses | INVALID_ARGUMENT | - |
| Search | filter: > 16 tags_all, > 64 tags_any | INVALID_ARGUMENT | - |
| Search | filter: an empty tag | INVALID_ARGUMENT | - |
| Search | a shard misses its deadline | OK + partial_shards, or UNAVAILABLE | - |
| Ingest | id empty or > 256 B, no content, bad text or image, > 64 tags, > 4096 B metadata | OK | INVALID_ARGUMENT |
| Ingest | empty metadata key or tag | OK | INVALID_ARGUMENT |
| Ingest | valid items (odd-character ids, duplicate ids in one stream) | OK | OK |
| Ingest | an encoder or replica down or full | OK | UNAVAILABLE, RESOURCE_EXHAUSTED |
| Delete, Get | no ids, over CROSSMODAL_MAX_BATCH ids, an empty or > 256 B id | INVALID_ARGUMENT | - |
| Delete, Get | 1..MAX_BATCH valid ids (odd characters, duplicates, absent) | OK | - |
| GetStats | any request | OK | - |
| Encode | 0 or over CROSSMODAL_ENCODER_MAX_REQUEST_ITEMS items | INVALID_ARGUMENT | - |
| Encode | item: key > 256 B, no content, other modality, bad text, bad image, bomb header | OK | INVALID_ARGUMENT |
| Encode | item: valid text or image | OK | OK |
| Encode | the encoder queue is full | RESOURCE_EXHAUSTED | - |
| GetModelInfo | any request | OK | - |
| index RPCs with a shard | shard not served (2, 2^32-1, negative) | NOT_FOUND | - |
| UpsertVectors | 0 or over CROSSMODAL_MAX_BATCH items, empty model_id | INVALID_ARGUMENT | - |
| UpsertVectors | model_id of another model | FAILED_PRECONDITION | - |
| UpsertVectors | item: bad id, modality 0 or unknown, bad vector, bad metadata or tags | OK | INVALID_ARGUMENT |
| UpsertVectors | item: valid (a duplicate id in one batch: the last one wins) | OK | OK |
| DeleteVectors, GetVectors | 0 or over MAX_BATCH ids, an empty or > 256 B id | INVALID_ARGUMENT | - |
| DeleteVectors, GetVectors | 1..MAX_BATCH valid ids (absent ones are not an error) | OK | - |
| SearchShard | k 0, over CROSSMODAL_MAX_K or negative; bad vector, modality or filter | INVALID_ARGUMENT | - |
| SearchShard | model_id of another model | FAILED_PRECONDITION | - |
| SearchShard | valid query | OK | - |
| GetShardStats | any request for a served shard | OK | - |
| CreateSnapshot | a served shard holding items | OK | - |
| CreateSnapshot | nothing stored yet; a graph that cannot be made whole | FAILED_PRECONDITION, UNAVAILABLE | - |
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import grpc

C = grpc.StatusCode
OK, INVALID, NOT_FOUND, EXHAUSTED = C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.RESOURCE_EXHAUSTED
PRECONDITION, UNAVAILABLE = C.FAILED_PRECONDITION, C.UNAVAILABLE
NEVER = frozenset({C.UNKNOWN, C.INTERNAL})

# Call statuses any RPC may give to bytes that do not parse, or to a message over the size limit.
TRANSPORT = frozenset({INVALID, EXHAUSTED})

# (rpc, input class) -> the documented call statuses. The table in the docstring is the same, in words.
CALL: dict[tuple[str, str], frozenset[grpc.StatusCode]] = {
    ("Search", "vector"): frozenset({OK, INVALID, PRECONDITION, UNAVAILABLE}),
    ("Search", "text"): frozenset({OK, INVALID, PRECONDITION, UNAVAILABLE}),
    ("Search", "image"): frozenset({OK, INVALID, PRECONDITION, UNAVAILABLE}),
    ("Search", "like_id"): frozenset({OK, INVALID, NOT_FOUND, PRECONDITION, UNAVAILABLE}),
    ("Search", "raw"): frozenset({OK, INVALID, NOT_FOUND, PRECONDITION, UNAVAILABLE}) | TRANSPORT,
    ("Ingest", "items"): frozenset({OK}),
    ("Ingest", "raw"): frozenset({OK}) | TRANSPORT,
    ("Delete", "ids"): frozenset({OK, INVALID}),
    ("Delete", "raw"): frozenset({OK, INVALID}) | TRANSPORT,
    ("Get", "ids"): frozenset({OK, INVALID}),
    ("Get", "raw"): frozenset({OK, INVALID}) | TRANSPORT,
    ("GetStats", "raw"): frozenset({OK}) | TRANSPORT,
    ("Encode", "items"): frozenset({OK, INVALID, EXHAUSTED}),
    ("Encode", "raw"): frozenset({OK, INVALID, EXHAUSTED}) | TRANSPORT,
    ("GetModelInfo", "raw"): frozenset({OK}) | TRANSPORT,
    ("UpsertVectors", "items"): frozenset({OK, INVALID, NOT_FOUND, PRECONDITION}),
    ("UpsertVectors", "raw"): frozenset({OK, INVALID, NOT_FOUND, PRECONDITION}) | TRANSPORT,
    ("DeleteVectors", "ids"): frozenset({OK, INVALID, NOT_FOUND}),
    ("DeleteVectors", "raw"): frozenset({OK, INVALID, NOT_FOUND}) | TRANSPORT,
    ("GetVectors", "ids"): frozenset({OK, INVALID, NOT_FOUND}),
    ("GetVectors", "raw"): frozenset({OK, INVALID, NOT_FOUND}) | TRANSPORT,
    ("SearchShard", "query"): frozenset({OK, INVALID, NOT_FOUND, PRECONDITION}),
    ("SearchShard", "raw"): frozenset({OK, INVALID, NOT_FOUND, PRECONDITION}) | TRANSPORT,
    ("GetShardStats", "raw"): frozenset({OK}) | TRANSPORT,
    ("CreateSnapshot", "shard"): frozenset({OK, NOT_FOUND, PRECONDITION, UNAVAILABLE}),
    ("CreateSnapshot", "raw"): frozenset({OK, NOT_FOUND, PRECONDITION, UNAVAILABLE}) | TRANSPORT,
}

# (rpc, input class) -> the documented per-item statuses inside an OK reply.
ITEM: dict[tuple[str, str], frozenset[grpc.StatusCode]] = {
    ("Ingest", "items"): frozenset({OK, INVALID, UNAVAILABLE, EXHAUSTED}),
    ("Ingest", "raw"): frozenset({OK, INVALID, UNAVAILABLE, EXHAUSTED}),
    ("Encode", "items"): frozenset({OK, INVALID, EXHAUSTED}),
    ("Encode", "raw"): frozenset({OK, INVALID, EXHAUSTED}),
    ("UpsertVectors", "items"): frozenset({OK, INVALID}),
    ("UpsertVectors", "raw"): frozenset({OK, INVALID}),
}

# What the run saw: (service label, rpc) -> Counter of call code names; per-item codes separately.
SEEN_CALLS: dict[tuple[str, str], Counter[str]] = {}
SEEN_ITEMS: dict[tuple[str, str], Counter[str]] = {}


def code_of(number: int) -> grpc.StatusCode:
    """The StatusCode with gRPC number `number` (UNKNOWN for a number grpc does not define)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def check_call(service: str, rpc: str, cls: str, code: grpc.StatusCode, message: str) -> None:
    """Fail unless `code` is documented for (rpc, cls) and an error carries a message; tally it."""
    allowed = CALL[(rpc, cls)]
    assert code not in NEVER, f"{service}.{rpc} [{cls}] answered {code.name}: {message!r}"
    assert code in allowed, f"{service}.{rpc} [{cls}] answered {code.name} ({message!r}); documented: {_names(allowed)}"
    if code != OK:
        assert message.strip(), f"{service}.{rpc} [{cls}] answered {code.name} without a message"
    SEEN_CALLS.setdefault((service, rpc), Counter())[code.name] += 1


def check_item(service: str, rpc: str, cls: str, number: int, message: str) -> grpc.StatusCode:
    """Fail unless a per-item status is documented for (rpc, cls) and an error carries a message."""
    code = code_of(number)
    allowed = ITEM[(rpc, cls)]
    assert code not in NEVER, f"{service}.{rpc} [{cls}] item status {number} ({code.name}): {message!r}"
    assert code in allowed, (
        f"{service}.{rpc} [{cls}] item status {code.name} ({message!r}); documented: {_names(allowed)}"
    )
    if code != OK:
        assert message.strip(), f"{service}.{rpc} [{cls}] item status {code.name} without a message"
    SEEN_ITEMS.setdefault((service, rpc), Counter())[code.name] += 1
    return code


def _names(codes: Iterable[grpc.StatusCode]) -> str:
    return ", ".join(sorted(c.name for c in codes))
