"""The shared protocols: what counts as an implementation, and the expected-version values."""

from __future__ import annotations

from collections.abc import Sequence

from uno.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    CheckpointStore,
    Event,
    EventHandler,
    EventPublisher,
    EventStore,
    NewEvent,
    RecordedEvent,
    SnapshotStore,
    StreamAppend,
    StreamState,
)


class Noted(Event):
    event_type = "test.Noted"


class DictCheckpoints:
    def __init__(self) -> None:
        self.positions: dict[str, int] = {}

    async def load_checkpoint(self, consumer: str) -> int | None:
        return self.positions.get(consumer)

    async def save_checkpoint(self, consumer: str, position: int) -> None:
        self.positions[consumer] = position


class ListPublisher:
    def __init__(self) -> None:
        self.published: list[RecordedEvent[Event]] = []

    async def publish(self, events: Sequence[RecordedEvent[Event]]) -> None:
        self.published.extend(events)


def test_expected_version_states_print_their_names() -> None:
    assert [str(s) for s in (ANY, NO_STREAM, STREAM_EXISTS)] == [
        "ANY",
        "NO_STREAM",
        "STREAM_EXISTS",
    ]
    assert set(StreamState) == {ANY, NO_STREAM, STREAM_EXISTS}


def test_structural_implementations_are_recognised() -> None:
    async def handler(event: RecordedEvent[Event]) -> None:
        return None

    assert isinstance(DictCheckpoints(), CheckpointStore)
    assert isinstance(ListPublisher(), EventPublisher)
    assert isinstance(handler, EventHandler)
    assert not isinstance(DictCheckpoints(), EventStore)
    assert not isinstance(ListPublisher(), SnapshotStore)


def test_new_event_gets_a_fresh_time_ordered_id() -> None:
    first, second = NewEvent(data=Noted()), NewEvent(data=Noted())
    assert first.event_id.version == 7
    assert first.event_id < second.event_id
    assert StreamAppend(stream_id="s", events=[first]).expected_version is ANY
