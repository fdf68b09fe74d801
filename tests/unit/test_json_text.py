"""Commands as JSON text: one object, no duplicated key at any depth (issue 7 items 3 and 5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commands.json_text import parse_command_array, parse_command_json
from ledger.errors import Rejected


def refusal(data: bytes) -> dict[str, Any]:
    """The details of the rejection of ``data``."""
    with pytest.raises(Rejected) as caught:
        parse_command_json(data)
    assert caught.value.code == "invalid_command"
    return caught.value.details


def test_an_object_is_parsed() -> None:
    """A plain command object comes back as a dict."""
    assert parse_command_json(b'{"type": "ConsumeStamp", "at": "12:00:00"}') == {
        "type": "ConsumeStamp",
        "at": "12:00:00",
    }


def test_duplicated_key_is_invalid_command_naming_the_key() -> None:
    """The transfer of 1 that became 1000: refused, naming ``quantity``."""
    details = refusal(b'{"type": "TransferStamps", "quantity": 1, "quantity": 1000}')
    assert details["errors"] == [
        {"field": "quantity", "message": "duplicated key in a JSON object"}
    ]


def test_duplicated_key_in_a_nested_object_is_refused() -> None:
    """A profile or a mass-transfer line that repeats a key is refused too."""
    assert refusal(b'{"profile": {"name": "a", "name": "b"}}')["errors"][0]["field"] == "name"
    details = refusal(b'{"lines": [{"to_id": "a"}, {"to_id": "b", "to_id": "c"}]}')
    assert details["errors"][0]["field"] == "to_id"


def test_equal_keys_in_different_objects_are_not_duplicates() -> None:
    """Two lines with the same keys are two objects, each with its keys once."""
    value = parse_command_json(b'{"lines": [{"to_id": "a"}, {"to_id": "a"}], "to_id": "x"}')
    assert value["to_id"] == "x"


def test_escaped_colons_and_quotes_do_not_hide_a_duplicate() -> None:
    """Colons and quotes inside strings, escaped or not, are not taken for keys."""
    assert parse_command_json(b'{"a": "\\u003a\\":", "b": "x:y"}') == {"a": ':":', "b": "x:y"}
    assert refusal(b'{"a\\u003a": 1, "a:": 2}')["errors"][0]["field"] == "a:"
    assert refusal(b'{"a": "b:c", "a": "d"}')["errors"][0]["field"] == "a"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty line: a JSON object was expected"),
        (b"  \r", "empty line: a JSON object was expected"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        (b'{"name": "Jos\xe9"}', "not UTF-8 text (byte 13)"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
)
def test_anything_but_one_object_is_invalid_command(data: bytes, reason: str) -> None:
    """Empty text, invalid UTF-8, deep nesting, another JSON value: each has its reason."""
    assert refusal(data)["reason"] == reason


@pytest.mark.parametrize(
    "data", [b"{not json", b'{"a": NaN}', b'{"a": 1e400}', b'{"a": "\\ud800"}', b"{} {}"]
)
def test_text_that_is_not_json_is_invalid_command(data: bytes) -> None:
    """Malformed text, NaN, out-of-range numbers, lone surrogates, trailing data are refused."""
    assert refusal(data)["reason"].startswith("not JSON")


# The counting shortcut agrees with a parser that sees every key -----------------------------

KEYS = st.sampled_from(["a", "b", "a:", ":", 'q"', "\\", "a\\u003a", "ñ"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.sampled_from(["x", ":", "a:b", '"', "\\:"])
)


def _render(value: Any, ensure_ascii: bool) -> str:
    """JSON text of ``value``, where an object is a list of (key, value) pairs (keys may repeat)."""
    if isinstance(value, tuple):
        members = ", ".join(
            f"{json.dumps(key, ensure_ascii=ensure_ascii)} : {_render(item, ensure_ascii)}"
            for key, item in value[0]
        )
        return "{" + members + "}"
    if isinstance(value, list):
        return "[" + ",".join(_render(item, ensure_ascii) for item in value) + "]"
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    # Escape colons inside strings now and then, as a hostile writer may.
    return text.replace(":", "\\u003a") if ensure_ascii else text


VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(KEYS, inner), max_size=4).map(lambda pairs: (pairs,)),
    ),
    max_leaves=12,
)


def _repeats(pairs_value: Any) -> bool:
    if isinstance(pairs_value, tuple):
        keys = [key for key, _ in pairs_value[0]]
        return len(set(keys)) != len(keys) or any(_repeats(v) for _, v in pairs_value[0])
    if isinstance(pairs_value, list):
        return any(_repeats(item) for item in pairs_value)
    return False


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES), max_size=5).map(lambda pairs: (pairs,)), st.booleans())
def test_duplicates_are_found_exactly(value: Any, ensure_ascii: bool) -> None:
    """A text is refused for a duplicated key exactly when some object in it repeats one."""
    data = _render(value, ensure_ascii).encode()
    if _repeats(value):
        details = refusal(data)
        assert details["errors"][0]["message"] == "duplicated key in a JSON object"
    else:
        assert parse_command_json(data) == json.loads(data)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.tuples(KEYS, VALUES), max_size=4).map(lambda pairs: (pairs,)), max_size=4),
    st.booleans(),
)
def test_an_array_is_taken_whole_exactly_when_each_element_would_be(
    objects: list[Any], ensure_ascii: bool
) -> None:
    """A batch's array is taken in one parse exactly when no object in it repeats a key, and
    then equals what each element gives alone."""
    data = ("[" + ",".join(_render(o, ensure_ascii) for o in objects) + "]").encode()
    if any(_repeats(o) for o in objects):
        assert parse_command_array(data) is None
    else:
        assert parse_command_array(data) == json.loads(data)


@pytest.mark.parametrize(
    "data",
    [
        b'[{"type": "A"}, 1]',
        b'[{"type": "A"}, [{"type": "B"}]]',
        b'{"type": "A"}',
        b'[{"type": "A", "type": "B"}]',
        b'[{"type": "A"}, {"x": {"y": 1, "y": 2}}]',
        b'[{"type": "' + bytes([0xFF]) + b'"}]',
        b"[" * 2_000 + b"]" * 2_000,
        b'[{"type": "A"}',
        b"",
    ],
)
def test_an_array_with_anything_but_clean_objects_is_left_to_each_element(data: bytes) -> None:
    """None: a batch then parses each element alone, for its own rejection."""
    assert parse_command_array(data) is None


def test_a_clean_array_is_its_objects() -> None:
    assert parse_command_array(b'[{"type": "A", "at": "12:00"}, {"type": "B"}]') == [
        {"type": "A", "at": "12:00"},
        {"type": "B"},
    ]
    assert parse_command_array(b"[]") == []
