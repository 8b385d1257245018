"""Every check of a public request, run before anything is encoded, written or fanned out to a shard.

The rules themselves live in `services.common.limits`; this module applies them to the gateway's
messages, so a request the shards would refuse never reaches them (a 100,000-clause filter is refused
here, not copied to every shard).
"""

from __future__ import annotations

import numpy as np

from crossmodal.v1 import gateway_pb2, types_pb2
from services.common.limits import LimitError, Limits, check_filter, check_id, check_modality, check_vector


def check_search(request: gateway_pb2.SearchRequest, limits: Limits, dim: int) -> None:
    """Refuse a search whose query, K, target or filter breaks a limit."""
    limits.check_k(request.k)
    check_modality(request.target, allow_unspecified=True)
    check_filter_message(request.filter)
    which = request.WhichOneof("query")
    if which is None:
        raise LimitError("the search has no query: set one of text, image, vector or like_id")
    if which == "text":
        limits.check_text(request.text, "the query text")
    elif which == "image":
        limits.check_image(request.image, "the query image")
    elif which == "vector":
        check_vector(np.asarray(request.vector.values, dtype=np.float32), dim, "the query vector")
    else:
        check_id(request.like_id, "like_id")


def check_filter_message(message: types_pb2.Filter) -> None:
    """Refuse a filter with too many or oversized clauses or tags."""
    check_filter(((c.key, c.any_of) for c in message.clauses), message.tags_all, message.tags_any)


def check_item(item: gateway_pb2.IngestRequest, limits: Limits) -> None:
    """Refuse an item without an id or content, or whose content or metadata breaks a limit."""
    check_id(item.id)
    which = item.WhichOneof("content")
    if which is None:
        raise LimitError("the item has no content: set image or text")
    if which == "text":
        limits.check_text(item.text, "the item text")
    else:
        limits.check_image(item.image, "the item image")
    limits.check_metadata(item.metadata, item.tags)
