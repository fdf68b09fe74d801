"""Records as JSON-ready data: a dataclass's fields, in order, with its datetimes as text.

Reports and rows (``ledger verify --json``, ``ledger status --json``, a holder's history, an
API key) are dataclasses whose JSON object is their fields in declaration order; this is the
one place that writes them so.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def json_fields(record: DataclassInstance, **replaced: Any) -> dict[str, Any]:
    """``record``'s fields in declaration order, a datetime as ISO 8601 text; ``replaced``
    gives some fields another value, in their place."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        value = replaced[field.name] if field.name in replaced else getattr(record, field.name)
        out[field.name] = value.isoformat() if isinstance(value, datetime) else value
    return out
