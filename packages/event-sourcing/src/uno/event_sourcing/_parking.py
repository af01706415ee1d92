"""Parked events: events a projection skipped after a failure, kept in the store for replay.

A parked event is recorded as a ``ProjectionEventParked`` event in the
stream ``$parked-<projection>`` of the same store, so it is as durable as the
events themselves and, for a transactional projection, parked in the same
transaction that moves its checkpoint past the failing event. An event the
store could not decode is parked with its stored bytes (``raw_data``,
``raw_metadata``): the record keeps what is needed to inspect or repair it even
if the original is later erased, and replaying it reads the original again,
which succeeds once its class (or upcaster) is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from uno.event_sourcing._projection import Projection, ProjectionBase, TransactionalProjection
from uno.events import Event, EventStore, RawEvent, RecordedEvent, TransactionalEventStore
from uno.events.exceptions import (
    EventDecodeError,
    StreamDeleted,
    UnknownEventType,
    UpcastError,
)

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
    """A projection skipped an event whose handler failed, or that did not decode.

    Attributes:
        projection: The projection's name.
        event_id: The skipped event's id.
        stream_id: Its stream.
        stream_version: Its version in the stream (to read it again).
        global_position: Its global position.
        parked_event_type: Its ``event_type``.
        error: The handler's exception, as ``Type: message`` (cut at 2000 characters),
            or the decoding error (``EventDecodeError``, ``UnknownEventType``...).
        parked_event_version: Its stored ``event_version``, when it did not decode.
        raw_data: Its stored data bytes, when it did not decode (``None`` otherwise).
        raw_metadata: Its stored metadata bytes, when it did not decode.
    """

    event_type = "uno.ProjectionEventParked"

    projection: str
    event_id: str
    stream_id: str
    stream_version: int
    global_position: int
    parked_event_type: str
    error: str
    parked_event_version: int | None = None
    raw_data: bytes | None = None
    raw_metadata: bytes | None = None


def parked_stream(projection: str) -> str:
    """Return the stream that holds a projection's parked events."""
    return f"$parked-{projection}"


def replay_cursor(projection: str) -> str:
    """Return the checkpoint name that remembers how far parked events were replayed."""
    return f"$parked-{projection}:replayed"


def parked_event(
    projection: str, event: RecordedEvent[Event] | RawEvent, error: BaseException
) -> ProjectionEventParked:
    """Return the record of ``event`` parked after ``error``; a ``RawEvent`` keeps its bytes."""
    raw = event if isinstance(event, RawEvent) else None
    return ProjectionEventParked(
        projection=projection,
        event_id=str(event.event_id),
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        global_position=event.global_position,
        parked_event_type=event.event_type,
        error=_describe(error),
        parked_event_version=raw.event_version if raw else None,
        raw_data=raw.data if raw else None,
        raw_metadata=raw.metadata if raw else None,
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_MAX_ERROR]


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
    cursor = replay_cursor(name)
    replayed = again = 0
    for version, record in await parked_records(store, name):
        readable, event = await _read_original(store, record, cursor, version)
        if not readable:
            again += 1
            continue
        if isinstance(projection, TransactionalProjection):
            assert isinstance(store, TransactionalEventStore)
            error = await _replay_in_transaction(store, projection, event, cursor, version)
        else:
            assert isinstance(projection, Projection)
            error = await _replay(store, projection, event, cursor, version)
        if error is None:
            replayed += 1
        else:
            again += 1
    return ParkedReplay(replayed, again)


async def _replay_in_transaction(
    store: TransactionalEventStore,
    projection: TransactionalProjection,
    event: RecordedEvent[Event] | None,
    cursor: str,
    version: int,
) -> Exception | None:
    """Apply one parked event with the cursor in one transaction; park it anew if it fails."""
    name = projection.projection_name()
    error: Exception | None = None
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
                await tx.append(parked_stream(name), [parked_event(name, event, error)])
            await tx.save_checkpoint(cursor, version)
    return error


async def _replay(
    store: ProjectionStore,
    projection: Projection,
    event: RecordedEvent[Event] | None,
    cursor: str,
    version: int,
) -> Exception | None:
    """Apply one parked event, then move the cursor; park it anew if it fails."""
    name = projection.projection_name()
    error: Exception | None = None
    try:
        if event is not None:
            await projection.apply(event)
    except Exception as exc:
        error = exc
    if error is not None and event is not None:
        await store.append(parked_stream(name), [parked_event(name, event, error)])
    await store.save_checkpoint(cursor, version)
    return error


async def _read_original(
    store: ProjectionStore, record: ProjectionEventParked, cursor: str, version: int
) -> tuple[bool, RecordedEvent[Event] | None]:
    """Return ``(True, event)``, or ``(False, None)`` having parked anew one that cannot decode."""
    try:
        return True, await original_event(store, record)
    except (EventDecodeError, UnknownEventType, UpcastError) as exc:
        await _park_again(store, record, exc, cursor, version)
        return False, None


async def _park_again(
    store: ProjectionStore,
    record: ProjectionEventParked,
    error: BaseException,
    cursor: str,
    version: int,
) -> None:
    """Park an event that still does not decode anew, with the new error, past the cursor."""
    again = msgspec.structs.replace(record, error=_describe(error))
    stream = parked_stream(record.projection)
    if isinstance(store, TransactionalEventStore):
        async with store.transaction() as tx:
            await tx.append(stream, [again])
            await tx.save_checkpoint(cursor, version)
    else:
        await store.append(stream, [again])
        await store.save_checkpoint(cursor, version)
