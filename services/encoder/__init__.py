"""The encoder service, run by encoder_text and encoder_image with their own tower.

Read it in this order: `service` (wiring into the shared server life cycle), `config`, the domain
(`engine`, `batching`, `errors`), `servicer` (the RPCs and the one table of status codes), `metrics`.
"""
