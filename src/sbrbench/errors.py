"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class SbrError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code: int = 1


class DataError(SbrError):
    """Malformed, missing or untrusted input data."""


class ChecksumError(DataError):
    """A file's sha256 differs from the one the registry pins."""


class DiskFullError(SbrError, OSError):
    """A write failed because the disk (or quota) is full; what was there before is untouched.

    Built as `DiskFullError(errno, message)`; it is an `OSError` too, so code that tolerates a
    failed optional write (a cache) still does.
    """

    def __str__(self) -> str:
        return str(self.strerror)
