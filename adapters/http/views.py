"""The routes ``/v1/views/<query>/{id}``, read off ``Ledger.views``' signatures: every query
about one account (its one positional parameter), with its keyword filters, sorts and pages."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from datetime import date, datetime
from typing import Any

from ledger.projections.views import Views


@dataclasses.dataclass(frozen=True)
class ViewParameter:
    """A query parameter of a view route: its name, type (str, bool, int, date, datetime),
    default."""

    name: str
    kind: type[Any]
    required: bool
    default: Any


@dataclasses.dataclass(frozen=True)
class ViewQuery:
    """One query of ``Ledger.views`` as a route: ``/v1/views/<name>/{<subject>}``."""

    name: str
    subject: str
    parameters: tuple[ViewParameter, ...]
    row: type[Any]
    many: bool
    summary: str

    @property
    def path(self) -> str:
        """The route's path template."""
        return f"/v1/views/{self.name}/{{{self.subject}}}"


_PARAMETER_KINDS = (str, bool, int, date, datetime)
_NOT_ROUTED = frozenset({"purge_due"})
"""Queries that are operations, not a reader's (``ledger purge-due`` runs that one)."""


def view_queries() -> tuple[ViewQuery, ...]:
    """Every query of ``Ledger.views`` that answers rows about one account (its first
    parameter), with its keyword parameters: the routes ``/v1/views/...``."""
    found = []
    for name, method in inspect.getmembers(Views, inspect.isfunction):
        if name.startswith("_") or name in _NOT_ROUTED:
            continue
        if method.__qualname__.split(".")[0] != "Views":
            continue
        hints = typing.get_type_hints(method)
        returned = hints.get("return")
        many = typing.get_origin(returned) is list
        row = typing.get_args(returned)[0] if many else returned
        if not dataclasses.is_dataclass(row):
            continue
        signature = inspect.signature(method)
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self"
        ]
        if len(positional) != 1:
            continue
        parameters = []
        for p in signature.parameters.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            kinds = [k for k in (hints[p.name], *typing.get_args(hints[p.name])) if k]
            kind = next((k for k in kinds if k in _PARAMETER_KINDS), None)
            if kind is None:
                continue  # a parameter no query string can give
            required = p.default is inspect.Parameter.empty
            parameters.append(
                ViewParameter(p.name, kind, required, None if required else p.default)
            )
        summary = (method.__doc__ or name).strip().splitlines()[0]
        found.append(
            ViewQuery(name, positional[0].name, tuple(parameters), row, many, summary)  # type: ignore[arg-type]
        )
    return tuple(found)
