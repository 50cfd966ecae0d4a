"""The error types farfield raises for bad input and bad options.

Every problem with a user's *input* (a file that is missing, empty, truncated, malformed, of an unknown
format, or holding NaN coordinates) raises :class:`InputError`; every problem with a user's *options*
(an unknown edge builder, a bad value for a parameter) raises :class:`ConfigError`. Both derive from
:class:`FarfieldError` (and from ``ValueError``), and their message always names the offending file or
option and says what is wrong. The command line prints them as one line, without a traceback, and exits
with status 2.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["FarfieldError", "InputError", "ConfigError"]


class FarfieldError(ValueError):
    """Base class of farfield's user-facing errors."""


class InputError(FarfieldError):
    """A file (or in-memory input) cannot be used; the message names it and says why.

    Attributes:
        source: the file path or input name the error is about.
        reason: what is wrong with it.
    """

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):
        # picklable with its two arguments, so an error raised in a worker process arrives intact
        return (type(self), (self.source, self.reason))


class ConfigError(FarfieldError):
    """An option or configuration value is unknown or invalid; the message names the key and the
    allowed values."""
