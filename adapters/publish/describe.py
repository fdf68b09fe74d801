"""How the targets name a broker and its errors in ``TargetUnavailable``'s text."""

from __future__ import annotations


def where(url: str) -> str:
    """The URL without credentials."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def describe(exc: BaseException) -> str:
    """The error's class, and its text when it has one."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
