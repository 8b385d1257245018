"""Errors the index domain raises; the servicer maps each class to one gRPC status code."""

from __future__ import annotations


class IndexServiceError(Exception):
    """Base class of the errors a caller can act on."""


class InvalidArgumentError(IndexServiceError):
    """The request itself is wrong in a way the index alone checks (no model id, K of 0).

    Breaking a limit of the contract (vector, id, filter, metadata, batch size) raises
    services.common.limits.LimitError instead; both are INVALID_ARGUMENT.
    """


class PreconditionError(IndexServiceError):
    """The request is well formed but does not fit the shard (another model or dimension)."""


class UnknownShardError(IndexServiceError):
    """This process does not serve the shard named in the request."""


class ShardUnavailableError(IndexServiceError):
    """The shard is not loaded yet or is shutting down; retry later or elsewhere."""


class StorageFullError(IndexServiceError):
    """The shard's data directory has no space left; the write was rolled back, free space and retry."""


class MapVersionError(IndexServiceError):
    """A search or read was planned at a partition map version this replica cannot answer for; re-plan it."""
