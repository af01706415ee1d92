"""Parked events: events a projection skipped after a failure, kept in the store for replay.

A parked event is recorded as a ``ProjectionEventParked`` event in the
stream ``$parked-<projection>`` of the same store, so it is as durable as the
events themselves and, for a transactional projection, parked in the same
transaction that moves its checkpoint past the failing event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from uno.event_sourcing._projection import Projection, ProjectionBase, TransactionalProjection
from uno.events import Event, EventStore, RecordedEvent, TransactionalEventStore
from uno.events.exceptions import StreamDeleted

if TYPE_CHECKING:
    from uno.event_sourcing._worker import ProjectionStore

__all__ = [
    "ParkedReplay",
    "ProjectionEventParked",
    "original_event",
    "parked_event",
    "parked_records",
    "parked_stream",
    "replay_cursor",
    "replay_parked",
]

_MAX_ERROR = 2000


class ProjectionEventParked(Event):
    """A projection skipped an event whose handler failed; replay it later.

    Attributes:
        projection: The projection's name.
        event_id: The skipped event's id.
        stream_id: Its stream.
        stream_version: Its version in the stream (to read it again).
        global_position: Its global position.
        parked_event_type: Its ``event_type``.
        error: The handler's exception, as ``Type: message`` (cut at 2000 characters).
    """

    event_type = "uno.ProjectionEventParked"

    projection: str
    event_id: str
    stream_id: str
    stream_version: int
    global_position: int
    parked_event_type: str
    error: str


def parked_stream(projection: str) -> str:
    """Return the stream that holds a projection's parked events."""
    return f"$parked-{projection}"


def replay_cursor(projection: str) -> str:
    """Return the checkpoint name that remembers how far parked events were replayed."""
    return f"$parked-{projection}:replayed"


def parked_event(
    projection: str, event: RecordedEvent[Event], error: BaseException
) -> ProjectionEventParked:
    """Return the record of ``event`` parked after ``error``."""
    return ProjectionEventParked(
        projection=projection,
        event_id=str(event.event_id),
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        global_position=event.global_position,
        parked_event_type=event.event_type,
        error=f"{type(error).__name__}: {error}"[:_MAX_ERROR],
    )


async def original_event(
    store: EventStore, parked: ProjectionEventParked
) -> RecordedEvent[Event] | None:
    """Read the parked event back from its stream (``None`` if it was deleted since)."""
    try:
        found = await store.read_stream(
            parked.stream_id, from_version=parked.stream_version, limit=1
        )
    except StreamDeleted:
        return None
    if not found or str(found[0].event_id) != parked.event_id:
        return None
    return found[0]


@dataclass(frozen=True)
class ParkedReplay:
    """What ``replay_parked`` did: events applied, and events that failed again (parked anew)."""

    replayed: int
    parked_again: int


async def parked_records(
    store: ProjectionStore, projection: str
) -> list[tuple[int, ProjectionEventParked]]:
    """Return ``(version in the parked stream, record)`` of the events not replayed yet."""
    after = await store.load_checkpoint(replay_cursor(projection)) or 0
    events = await store.read_stream(parked_stream(projection), from_version=after + 1)
    return [(e.stream_version, e.data) for e in events if isinstance(e.data, ProjectionEventParked)]


async def replay_parked(store: ProjectionStore, projection: ProjectionBase) -> ParkedReplay:
    """Apply a projection's parked events once more; park again those that fail."""
    name = projection.projection_name()
    cursor, stream = replay_cursor(name), parked_stream(name)
    replayed = again = 0
    for version, record in await parked_records(store, name):
        event = await original_event(store, record)
        error: Exception | None = None
        if isinstance(projection, TransactionalProjection):
            assert isinstance(store, TransactionalEventStore)
            try:
                async with store.transaction() as tx:
                    if event is not None:
                        await projection.apply(event, tx)
                    await tx.save_checkpoint(cursor, version)
            except Exception as exc:
                error = exc
            if error is not None:
                async with store.transaction() as tx:
                    if event is not None:
                        await tx.append(stream, [parked_event(name, event, error)])
                    await tx.save_checkpoint(cursor, version)
        else:
            assert isinstance(projection, Projection)
            try:
                if event is not None:
                    await projection.apply(event)
            except Exception as exc:
                error = exc
            if error is not None and event is not None:
                await store.append(stream, [parked_event(name, event, error)])
            await store.save_checkpoint(cursor, version)
        if error is None:
            replayed += 1
        else:
            again += 1
    return ParkedReplay(replayed, again)
