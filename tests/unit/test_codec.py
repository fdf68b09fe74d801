"""The stored event codec: versioned topics and upcasting of old bytes (STYLE: schema evolution).

A test-only aggregate, ``CodecProbe``, has an event at version 2 and one at version 3. Their old
versions are written here as the JSON bytes older code would have stored, by hand, so the tests
do not depend on the classes they check.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

from adapters.storage.codec import MsgspecMapper, encode_event
from adapters.storage.memory import MemoryStore
from ledger.domain import TOPICS, Aggregate, Created, Event

AT = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)


class CodecProbe(Aggregate):
    """A test-only aggregate whose events changed shape over time."""

    first_name: str
    last_name: str
    tags: list[str]

    class Opened(Created, frozen=True, kw_only=True):
        """Version 1, unchanged."""

        def apply(self, aggregate: CodecProbe) -> None:
            """Starts unnamed."""
            aggregate.first_name = ""
            aggregate.last_name = ""
            aggregate.tags = []

    class Renamed(Event, frozen=True, kw_only=True):
        """Version 2 splits version 1's ``name`` into first and last name."""

        class_version: ClassVar[int] = 2
        first_name: str
        last_name: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """``name: "Ana López"`` becomes ``first_name: "Ana", last_name: "López"``."""
            first, _, last = state.pop("name").partition(" ")
            state["first_name"] = first
            state["last_name"] = last

        def apply(self, aggregate: CodecProbe) -> None:
            """Keeps the names."""
            aggregate.first_name = self.first_name
            aggregate.last_name = self.last_name

    class Tagged(Event, frozen=True, kw_only=True):
        """Version 2 made ``tag`` a list ``tags``; version 3 added ``source``."""

        class_version: ClassVar[int] = 3
        tags: tuple[str, ...]
        source: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """One tag becomes a list of one."""
            state["tags"] = [state.pop("tag")]

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """Events from before version 3 were all tagged by hand."""
            state["source"] = "manual"

        def apply(self, aggregate: CodecProbe) -> None:
            """Adds the tags."""
            aggregate.tags.extend(self.tags)


def row(topic: str, state: bytes, version: int = 2, originator_id: str = "p1") -> StoredEvent:
    """A stored row as the database holds it."""
    return StoredEvent(
        originator_id=originator_id, originator_version=version, topic=topic, state=state
    )


V1_RENAMED = (
    b'{"originator_id":"p1","originator_version":2,'
    b'"timestamp":"2026-01-05T18:00:00Z","name":"Ana L\\u00f3pez"}'
)
V1_TAGGED = (
    b'{"originator_id":"p1","originator_version":3,"timestamp":"2026-01-05T18:00:00Z","tag":"vip"}'
)
V2_TAGGED = (
    b'{"originator_id":"p1","originator_version":3,'
    b'"timestamp":"2026-01-05T18:00:00Z","tags":["vip","norte"]}'
)


def test_current_versions_have_versioned_topics() -> None:
    """A version-N event (N > 1) is stored under ``Aggregate.Event#N``."""
    assert CodecProbe.Renamed.topic == "CodecProbe.Renamed#2"
    assert CodecProbe.Tagged.topic == "CodecProbe.Tagged#3"
    assert TOPICS["CodecProbe.Opened"] is CodecProbe.Opened


def test_v1_bytes_decode_into_the_v2_event() -> None:
    """Bytes stored under the v1 topic are upcast to the current class."""
    event = MsgspecMapper().to_domain_event(row("CodecProbe.Renamed", V1_RENAMED))
    assert event == CodecProbe.Renamed(
        originator_id="p1",
        originator_version=2,
        timestamp=AT,
        first_name="Ana",
        last_name="López",
    )


def test_v1_bytes_go_through_every_step_to_v3() -> None:
    """Upcasting runs v1→v2 then v2→v3."""
    event = MsgspecMapper().to_domain_event(row("CodecProbe.Tagged", V1_TAGGED, 3))
    assert isinstance(event, CodecProbe.Tagged)
    assert (event.tags, event.source) == (("vip",), "manual")


def test_v2_bytes_take_only_the_last_step_to_v3() -> None:
    """Bytes of version 2 are upcast from version 2 on."""
    event = MsgspecMapper().to_domain_event(row("CodecProbe.Tagged#2", V2_TAGGED, 3))
    assert isinstance(event, CodecProbe.Tagged)
    assert (event.tags, event.source) == (("vip", "norte"), "manual")


def test_current_version_round_trips() -> None:
    """An event of the current version is encoded under its topic and decoded back equal."""
    event = CodecProbe.Renamed(
        originator_id="p1", originator_version=2, timestamp=AT, first_name="Ana", last_name="Ruiz"
    )
    mapper = MsgspecMapper()
    stored = mapper.to_stored_event(event)
    assert (stored.topic, encode_event(event)[0]) == ("CodecProbe.Renamed#2", stored.topic)
    assert mapper.to_domain_event(stored) == event


def test_an_aggregate_loads_from_a_history_of_old_versions() -> None:
    """A stream written by older code rebuilds today's aggregate."""
    store = MemoryStore()
    opened = b'{"originator_id":"p1","originator_version":1,"timestamp":"2026-01-05T18:00:00Z"}'
    store.record_rows(
        [
            row("CodecProbe.Opened", opened, 1),
            row("CodecProbe.Renamed", V1_RENAMED, 2),
            row("CodecProbe.Tagged", V1_TAGGED, 3),
        ]
    )
    probe = store.load("p1")
    assert isinstance(probe, CodecProbe)
    assert (probe.version, probe.first_name, probe.last_name, probe.tags) == (
        3,
        "Ana",
        "López",
        ["vip"],
    )


def test_an_unknown_topic_is_a_deserialisation_error() -> None:
    """A topic no class claims cannot be silently skipped."""
    with pytest.raises(MapperDeserialisationError):
        MsgspecMapper().to_domain_event(row("CodecProbe.Vanished", V1_RENAMED))


def test_bytes_that_do_not_fit_the_schema_are_a_deserialisation_error() -> None:
    """v1 bytes stored under the v2 topic do not decode."""
    with pytest.raises(MapperDeserialisationError):
        MsgspecMapper().to_domain_event(row("CodecProbe.Renamed#2", V1_RENAMED))


def test_a_payload_moved_to_another_row_is_a_deserialisation_error() -> None:
    """The row's stream and version must match the payload's (an edited table)."""
    with pytest.raises(MapperDeserialisationError):
        MsgspecMapper().to_domain_event(row("CodecProbe.Renamed", V1_RENAMED, originator_id="p2"))
