"""Building blocks of the aggregates: events, aggregates, postings and snapshots.

Events are frozen ``msgspec.Struct``s (the stored schema, encoded by
``adapters/storage/codec.py``) that follow eventsourcing's mutation protocol (``mutate``), so
eventsourcing's repository and snapshot store rebuild our aggregates. An event's ``apply`` only
mutates state: it never raises for a business rule, reads a clock, logs or does I/O,
because it runs again on every replay.

Every event has a stable *topic* ``"Aggregate.Event"`` (plus ``"#N"`` from version 2 on) that is
independent of module paths, so code can move without breaking stored history.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Any, ClassVar, Self

import msgspec

# Units are separate books, never mixed.
STAMPS = "stamps"
POINTS = "points"
UNITS = (STAMPS, POINTS)

# Holders outside the aggregates. The issuance source goes negative as credits are created; the
# sinks collect what leaves circulation. With them every movement is double entry: per unit the
# sum of all balances is always zero (DESIGN §3.1).
ISSUANCE = "issuance"
SINK_CONSUMED = "sink:consumed"
SINK_SPENT = "sink:spent"
SINK_EXPIRED = "sink:expired"
SINKS = (SINK_CONSUMED, SINK_SPENT, SINK_EXPIRED)
HELD_PREFIX = "held:"
"""A CTI's held book (``held:<cti_id>``): stamps set aside by its open holds (DESIGN §4 Holds)."""


def held_book(cti_id: str) -> str:
    """The holder id of a CTI's held book."""
    return HELD_PREFIX + cti_id


class Posting(msgspec.Struct, frozen=True, array_like=True):
    """One leg of a movement: ``holder`` gains ``delta`` units (negative for a debit).

    ``ref`` names the movement (transfer id, CFDI UUID, ...) so an auditor can pair the two legs
    of a movement that spans two aggregates.
    """

    holder: str
    unit: str
    delta: int
    ref: str
    counterpart: str


TOPICS: dict[str, type[Event]] = {}
"""Every event class by its stored topic (filled as aggregate classes are defined)."""
AGGREGATES: dict[str, type[Aggregate]] = {}
"""Every aggregate class by its name (the topic of its snapshots)."""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A fact that happened to one aggregate; the stored schema of the ledger."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    # Who acted (DESIGN §4a): the ``actor`` of the command that made the event. Events stored
    # before the field existed decode with None.
    actor: str | None = None

    topic: ClassVar[str] = ""
    class_version: ClassVar[int] = 1
    aggregate_class: ClassVar[type[Aggregate]]

    def mutate(self, aggregate: Any) -> Any:
        """Evolves ``aggregate`` by this event (eventsourcing's ``CanMutateProtocol``)."""
        assert aggregate is not None, f"{self.topic} needs an aggregate"
        assert self.originator_version == aggregate.version + 1, (
            f"{self.topic} v{self.originator_version} after v{aggregate.version}"
        )
        self.apply(aggregate)
        aggregate.version = self.originator_version
        aggregate.modified_on = self.timestamp
        return aggregate

    def apply(self, aggregate: Any) -> None:
        """Changes the aggregate's state; overridden by events that change state."""

    def postings(self) -> tuple[Posting, ...]:
        """The balance legs this event records (none for events that move no credits)."""
        return ()

    def keys(self) -> tuple[str, ...]:
        """Idempotency keys this event consumes (an auditor checks each is used once)."""
        return ()


class Created(Event, frozen=True, kw_only=True):
    """The first event of an aggregate: it constructs the aggregate."""

    def mutate(self, aggregate: Any) -> Any:
        """Constructs the aggregate from nothing."""
        assert aggregate is None, f"{self.topic} on an existing aggregate"
        assert self.originator_version == 1
        cls = type(self).aggregate_class
        agg = cls.__new__(cls)
        agg.base_init(self.originator_id, self.timestamp)
        self.apply(agg)
        agg.version = 1
        return agg


_NO_DEFAULT = object()


class Aggregate:
    """An event-sourced aggregate: its state is the fold of its events.

    Subclasses annotate every state attribute; the annotations are the snapshot schema, so a
    snapshot restores exactly what the events built. Event classes are nested in the aggregate
    and registered under the topic ``"<Aggregate>.<Event>"``.
    """

    id: str
    version: int
    created_on: datetime
    modified_on: datetime

    snapshot_fields: ClassVar[tuple[str, ...]] = ()
    snapshot_type: ClassVar[type[msgspec.Struct]]
    # State added after snapshots of the aggregate were stored: its value in those snapshots
    # (a factory), so they still decode. Snapshots are stored schema too.
    snapshot_defaults: ClassVar[dict[str, Any]] = {}

    def base_init(self, aggregate_id: str, timestamp: datetime) -> None:
        """Sets the attributes every aggregate has."""
        self.id = aggregate_id
        self.version = 0
        self.created_on = timestamp
        self.modified_on = timestamp
        self.pending_events: list[Event] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        AGGREGATES[cls.__name__] = cls
        for name, value in list(vars(cls).items()):
            if isinstance(value, type) and issubclass(value, Event):
                value.aggregate_class = cls
                topic = f"{cls.__name__}.{name}"
                if value.class_version > 1:
                    topic += f"#{value.class_version}"
                assert topic not in TOPICS, f"duplicate event topic {topic}"
                value.topic = topic
                TOPICS[topic] = value
        hints = typing.get_type_hints(cls)
        cls.snapshot_fields = tuple(
            name
            for name, hint in hints.items()
            if typing.get_origin(hint) is not ClassVar and name != "pending_events"
        )
        # A state attribute with a class-level default (``failed_checks: int = 0``) was added
        # after snapshots were stored: snapshots without it still load, with that default.
        # A mutable one (a dict) names a factory in ``snapshot_defaults`` instead.
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for n in cls.snapshot_fields:
            default = getattr(cls, n, _NO_DEFAULT)
            if n in cls.snapshot_defaults:
                fields.append(
                    (n, hints[n], msgspec.field(default_factory=cls.snapshot_defaults[n]))
                )
            elif default is None or isinstance(default, int | str | float):
                fields.append((n, hints[n], default))
            else:
                fields.append((n, hints[n]))
        cls.snapshot_type = msgspec.defstruct(f"{cls.__name__}State", fields, kw_only=True)

    def trigger(self, event_class: type[Event], timestamp: datetime, **fields: Any) -> Event:
        """Records a new event: constructs it as the next version, applies it, keeps it pending."""
        return self.record(
            event_class(
                originator_id=self.id,
                originator_version=self.version + 1,
                timestamp=timestamp,
                **fields,
            )
        )

    def record(self, event: Event) -> Event:
        """Applies an event made as the next version (``trigger``) and keeps it pending.

        The hot path makes its event itself and records it here: a struct made with named
        arguments costs about a third of one made from a ``**`` dict, as ``trigger`` must.
        """
        event.apply(self)
        self.version = event.originator_version
        self.modified_on = event.timestamp
        self.pending_events.append(event)
        return event

    @classmethod
    def create(
        cls, event_class: type[Created], aggregate_id: str, timestamp: datetime, **fields: Any
    ) -> Self:
        """Constructs a new aggregate by its created event, kept pending."""
        event = event_class(
            originator_id=aggregate_id, originator_version=1, timestamp=timestamp, **fields
        )
        agg: Self = event.mutate(None)
        agg.pending_events.append(event)
        return agg

    def collect_events(self) -> list[Event]:
        """Returns and clears the pending events (eventsourcing's ``CollectEventsProtocol``)."""
        events, self.pending_events = self.pending_events, []
        return events

    def snapshot_state(self) -> msgspec.Struct:
        """The aggregate's state as its generated snapshot struct."""
        return self.snapshot_type(**{n: getattr(self, n) for n in self.snapshot_fields})

    def clone(self) -> Self:
        """An independent copy of the recorded state (no pending events)."""
        assert not self.pending_events, "only recorded state is cloned"
        state = msgspec.json.decode(
            _STATE_ENCODER.encode(self.snapshot_state()), type=self.snapshot_type
        )
        return self.from_snapshot_state(state)

    @classmethod
    def from_snapshot_state(cls, state: msgspec.Struct) -> Self:
        """Restores an aggregate from its snapshot struct."""
        agg = cls.__new__(cls)
        for name in cls.snapshot_fields:
            setattr(agg, name, getattr(state, name))
        agg.pending_events = []
        return agg


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The state of an aggregate at a version (eventsourcing's ``SnapshotProtocol``)."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    topic: str
    state: msgspec.Raw

    @classmethod
    def take(cls, aggregate: Aggregate, timestamp: datetime) -> Snapshot:
        """Snapshots an aggregate's current state."""
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=timestamp,
            topic=type(aggregate).__name__,
            state=msgspec.Raw(_STATE_ENCODER.encode(aggregate.snapshot_state())),
        )

    def mutate(self, aggregate: Any) -> Aggregate:
        """Restores the snapshotted aggregate (the first step of a replay)."""
        assert aggregate is None
        cls = AGGREGATES[self.topic]
        state = msgspec.json.decode(self.state, type=cls.snapshot_type)
        agg = cls.from_snapshot_state(state)
        assert agg.version == self.originator_version
        return agg


_STATE_ENCODER = msgspec.json.Encoder()
