"""Commands as JSON text: one object per text, and an object with a duplicated key is refused.

JSON leaves duplicated keys to the parser, and common parsers keep the last value silently: a
transfer of ``{"quantity": 1, "quantity": 1000}`` moved 1000. A ledger must not guess which one
the caller meant, so the whole command is ``invalid_command``.

The text is decoded by msgspec (fast, and it refuses invalid UTF-8, lone surrogates and
nesting deeper than its limit). Duplicates are then found by counting the keys of the text and of
the decoded value (``_repeats_a_key``): the decoded value holds fewer exactly when some object
repeated one. Only then is the text parsed again, slowly, to name the key.
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from typing import Any

import msgspec

from ledger.errors import Rejected
from ledger.write.gc_pause import GC_PAUSE

# A JSON string token, and the colon after it when it is an object's key. On valid JSON text,
# scanning from the start, every match begins at a real string's opening quote.
_STRING_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"([ \t\n\r]*:)?', re.DOTALL)
_KEY_SHOWN_CHARS_MAX = 100
"""A duplicated key named in a rejection is cut to this many characters."""
_DECODER = msgspec.json.Decoder()
_PAUSED_DECODE_BYTES_MIN = 1_024
"""Texts longer than this are decoded with the cyclic garbage collector paused (see
``parse_command_json``): nesting to the recursion limit takes more bytes than that."""


def _keys_in_text(data: bytes) -> int:
    return sum(1 for colon in _STRING_TOKEN.findall(data) if colon)


def _keys_in_value(value: Any) -> int:
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _repeats_a_key(data: bytes, value: Any) -> bool:
    """Whether the valid JSON text ``data``, decoded as ``value``, repeats a key in an object.

    Outside strings, a colon follows each key and nothing else. So, when no string escapes a
    colon (``\\u003a``), the text's colons are its keys plus the colons inside its strings; the
    decoded value holds every string of the text (and as many keys) exactly when no key was
    repeated, and fewer otherwise. Counting colons costs a few microseconds per command, a
    quarter of tokenizing the text with a regular expression, which remains for texts that
    escape a colon (or something that looks like it).
    """
    if b"\\u003" in data:
        return _keys_in_text(data) != _keys_in_value(value)
    keys = colons = 0
    stack = [value]
    while stack:
        item = stack.pop()
        members = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict):
            keys += len(item)
            for key in item:
                colons += key.count(":")
        for member in members:
            if isinstance(member, str):
                colons += member.count(":")
            elif isinstance(member, dict | list):
                stack.append(member)
    return data.count(b":") != keys + colons


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


def _duplicated_key(data: bytes) -> str:
    """The first duplicated key of ``data`` (valid JSON known to repeat a key)."""
    try:
        json.loads(data, object_pairs_hook=_refuse_duplicates)
    except _Duplicate as duplicate:
        return duplicate.key[:_KEY_SHOWN_CHARS_MAX]
    except (ValueError, RecursionError):
        # The standard parser's limits differ from msgspec's; the key then goes unnamed.
        return "?"
    raise AssertionError("text said to repeat a key parsed without a duplicate")  # pragma: no cover


def _not_json(data: bytes, exc: Exception) -> Rejected:
    """Why ``data`` did not decode, said plainly (checked only once decoding failed)."""
    if not data.strip():
        return Rejected("invalid_command", reason="empty line: a JSON object was expected")
    try:
        data.decode()  # msgspec reports bad UTF-8 only sometimes as such
    except UnicodeDecodeError as bad:
        return Rejected("invalid_command", reason=f"not UTF-8 text (byte {bad.start})")
    return Rejected("invalid_command", reason=f"not JSON: {exc}")


def _decode(data: bytes) -> Any:
    """``data`` decoded (the cyclic collector paused for a long text: see below); msgspec's own
    errors pass through."""
    # A text this long may nest deep enough for msgspec to recurse to the interpreter's limit
    # (it then raises RecursionError): a garbage collection that started down there would run
    # finalizers (a pool closing its connections) with no stack left for them.
    with GC_PAUSE if len(data) > _PAUSED_DECODE_BYTES_MIN else nullcontext():
        return _DECODER.decode(data)


def parse_command_array(data: bytes) -> list[dict[str, Any]] | None:
    """The commands of ``data`` when it is a JSON array of objects none of which repeats a key:
    one decode and one count of keys for the whole text, where a command at a time cost twice
    as much. None for anything else (each element is then parsed on its own, by
    ``parse_command_json``, for its own rejection)."""
    try:
        value = _decode(data)
    except (RecursionError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not isinstance(value, list) or not all(type(item) is dict for item in value):
        return None
    return None if _repeats_a_key(data, value) else value


def parse_command_json(data: bytes) -> dict[str, Any]:
    """The JSON object in ``data``; raises ``Rejected("invalid_command")`` for anything else.

    Refused: invalid UTF-8, text that is not JSON, a JSON value that is not an object, nesting
    too deep, and any object (at any depth) with a duplicated key.
    """
    try:
        value = _decode(data)
    except RecursionError:
        raise Rejected("invalid_command", reason="JSON nested too deeply") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _not_json(data, exc) from None
    if not isinstance(value, dict):
        raise Rejected("invalid_command", reason="not a JSON object")
    if _repeats_a_key(data, value):
        key = _duplicated_key(data)
        raise Rejected(
            "invalid_command",
            errors=[{"field": key, "message": "duplicated key in a JSON object"}],
        )
    return value
