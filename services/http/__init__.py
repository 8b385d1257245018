"""The HTTP/JSON service and search page: the gateway's API over HTTP, mapped from the protos' google.api.http rules.

A client of the gateway over gRPC only: every request becomes one gateway call (or one Ingest stream), carrying
the caller's API key and request id, and the gateway decides; no search logic lives here.
"""
