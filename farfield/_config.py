"""Helpers shared by farfield's typed, serialisable configuration dataclasses."""
from __future__ import annotations

from dataclasses import fields

from farfield.errors import ConfigError

__all__ = ["check_keys"]


def check_keys(cls, d: dict, what: str) -> None:
    """Raise :class:`ConfigError` naming the unknown keys of ``d`` and the allowed ones (the fields of
    dataclass ``cls``)."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {sorted(unknown)}; allowed: {sorted(known)}")
