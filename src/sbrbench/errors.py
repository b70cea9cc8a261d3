"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class SbrError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code: int = 1


class DataError(SbrError):
    """Malformed, missing or untrusted input data."""


class ChecksumError(DataError):
    """A file's sha256 differs from the one the registry pins."""
