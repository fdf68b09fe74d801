"""The command reference, derived from the command models: JSON Schema and docs/COMMANDS.md."""

from __future__ import annotations

from typing import Any, get_args

from ledger.commands.models import COMMAND_ADAPTER, AnyCommand, Command


def command_models() -> dict[str, type[Command]]:
    """Every command model by its ``type``, in the order of the command union."""
    union = get_args(AnyCommand)[0]
    models: dict[str, type[Command]] = {}
    for model in get_args(union):
        models[str(model.model_fields["type"].default)] = model
    return models


def json_schema(command_type: str | None = None) -> dict[str, Any]:
    """The JSON Schema of every command, or of one (``KeyError`` for an unknown type)."""
    if command_type is None:
        schema: dict[str, Any] = COMMAND_ADAPTER.json_schema()
        return schema
    return command_models()[command_type].model_json_schema()
