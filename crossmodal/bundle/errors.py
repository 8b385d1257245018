"""Errors raised while loading or verifying a model bundle."""

from __future__ import annotations


class BundleError(Exception):
    """A model bundle is missing, damaged, or inconsistent with its manifest; the message names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
