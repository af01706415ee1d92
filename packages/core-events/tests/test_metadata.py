"""Metadata and the recorded-event envelope."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from uno.events import Event, EventMetadata, RecordedEvent, uuid7


class Shipped(Event):
    event_type = "shop.Shipped"
    order: str


def recorded(metadata: EventMetadata) -> RecordedEvent[Shipped]:
    return RecordedEvent(
        event_id=uuid7(),
        stream_id="order-1",
        stream_version=3,
        global_position=42,
        recorded_at=datetime.now(UTC),
        event_type="shop.Shipped",
        event_version=1,
        data=Shipped(order="1"),
        metadata=metadata,
    )


def test_caused_by_links_to_the_cause_and_keeps_the_flow() -> None:
    cause = recorded(
        EventMetadata(
            correlation_id="flow-7",
            causation_id="cmd-1",
            tenant_id="acme",
            actor="user:1",
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            headers={"x": "y"},
        )
    )
    follow_up = EventMetadata.caused_by(cause)
    assert follow_up == EventMetadata(
        correlation_id="flow-7",
        causation_id=str(cause.event_id),
        tenant_id="acme",
        actor="user:1",
        traceparent=cause.metadata.traceparent,
    )


def test_caused_by_starts_a_correlation_at_the_first_event() -> None:
    cause = recorded(EventMetadata())
    assert EventMetadata.caused_by(cause).correlation_id == str(cause.event_id)


def test_recorded_event_round_trips_with_its_data_type() -> None:
    event = recorded(EventMetadata(actor="a"))
    data = msgspec.msgpack.encode(event)
    assert msgspec.msgpack.decode(data, type=RecordedEvent[Shipped]) == event


def test_recorded_event_defaults_to_empty_metadata() -> None:
    event = RecordedEvent(
        event_id=uuid7(),
        stream_id="s",
        stream_version=1,
        global_position=1,
        recorded_at=datetime.now(UTC),
        event_type="shop.Shipped",
        event_version=1,
        data=Shipped(order="1"),
    )
    assert event.metadata == EventMetadata()
    assert event.metadata.headers == {}
