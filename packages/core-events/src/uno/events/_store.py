"""The event store contract shared by every backend: values and protocols."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias, runtime_checkable
from uuid import UUID

import msgspec

from uno.events._event import Event
from uno.events._identifiers import uuid7
from uno.events._metadata import EventMetadata, RecordedEvent

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "CheckpointStore",
    "Direction",
    "EventStore",
    "ExpectedVersion",
    "NewEvent",
    "RawEvent",
    "RawLogReader",
    "Snapshot",
    "SnapshotStore",
    "StoreTransaction",
    "StreamAppend",
    "StreamState",
    "Subscription",
    "TransactionalEventStore",
]


class StreamState(enum.Enum):
    """What an append expects of a stream when it does not name an exact version."""

    ANY = "any"
    """Append whatever the stream's state."""
    NO_STREAM = "no_stream"
    """Append only if the stream has no events."""
    STREAM_EXISTS = "stream_exists"
    """Append only if the stream has at least one event."""

    def __str__(self) -> str:
        return self.name


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
STREAM_EXISTS = StreamState.STREAM_EXISTS

ExpectedVersion: TypeAlias = int | StreamState
"""``ANY``, ``NO_STREAM``, ``STREAM_EXISTS``, or the exact version of the stream's
last event (``0`` for a stream without events, the same as ``NO_STREAM``)."""


class Direction(enum.Enum):
    """Which way ``read_stream`` walks a stream."""

    FORWARDS = "forwards"
    BACKWARDS = "backwards"


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append with its metadata and id.

    Fix ``event_id`` yourself when a retry must not store the event twice:
    appending an id that is already stored is a no-op.
    """

    data: Event
    metadata: EventMetadata = msgspec.field(default_factory=EventMetadata)
    event_id: UUID = msgspec.field(default_factory=uuid7)


class StreamAppend(msgspec.Struct, frozen=True, kw_only=True):
    """One stream's part of an atomic append to several streams."""

    stream_id: str
    events: Sequence[Event | NewEvent]
    expected_version: ExpectedVersion = ANY


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append did to one stream.

    Attributes:
        stream_id: The stream appended to.
        stream_version: The stream's version after the append: pass it as the
            next ``expected_version``.
        global_position: Global position of the stream's last event after the
            append (of the already stored one, when the append was a no-op).
    """

    stream_id: str
    stream_version: int
    global_position: int


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The state of a stream's aggregate at one version, to load it without a full replay.

    ``state`` is a registered ``Event`` subclass that names the snapshot type
    (for example ``"bank.AccountSnapshot"``), so it is serialized, versioned and
    upcast like any event.
    """

    stream_id: str
    stream_version: int
    state: Event


class RawEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A stored event as its bytes, not decoded: what ``read_all_raw`` yields.

    It is how a reader gets past an event that does not decode (bad data
    written before append checked it, or by another program; a type this
    process does not register): keep its bytes (to inspect, fix or replay
    it), move the checkpoint past ``global_position``, and go on.

    Attributes:
        event_id: The event's id.
        stream_id: Its stream.
        stream_version: Its version in the stream.
        global_position: Its position in the global log.
        recorded_at: When the store wrote it.
        event_type: The type name stored with it.
        event_version: The type version stored with it.
        data: The event's bytes, as the store's serializer encoded them.
        metadata: The metadata's bytes; empty when the event had none.
    """

    event_id: UUID
    stream_id: str
    stream_version: int
    global_position: int
    recorded_at: datetime
    event_type: str
    event_version: int
    data: bytes
    metadata: bytes


@runtime_checkable
class RawLogReader(Protocol):
    """A store that can read its global log undecoded (every uno store is one).

    An implementer guarantees that ``read_all_raw`` yields the events
    ``read_all`` would, with the same arguments, in the same order, as
    ``RawEvent``s, without decoding them: it never raises a serialization error.
    """

    def read_all_raw(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RawEvent]:
        """Iterate the global log after position ``after`` as stored bytes."""
        ...


@runtime_checkable
class Subscription(Protocol):
    """A live read of the global log: catch-up first, then new events as they commit.

    An implementer guarantees that, from the checkpoint it started after, it
    yields every committed event exactly once, in global order, never an event
    of a transaction that rolled back, and that each stream's events come in
    version order. ``aclose`` (or leaving ``async with``) stops it cleanly and
    releases its connections.
    """

    def __aiter__(self) -> AsyncIterator[RecordedEvent[Event]]:
        """Return the iterator of events; it ends only when the subscription closes."""
        ...

    async def aclose(self) -> None:
        """Stop following the log and release resources; safe to call twice."""
        ...

    async def __aenter__(self) -> Self:
        """Return the subscription itself."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the subscription."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """An append-only store of event streams with a global, gap-free log.

    An implementer guarantees:

    - ``append`` is atomic: all of its events are stored, or none, and a failed
      or cancelled append leaves nothing behind;
    - the expected version is checked inside that atomic step; on a mismatch
      it raises ``WrongExpectedVersion`` carrying the actual version;
    - an event whose ``event_id`` is already stored is not stored again (the
      append is an idempotent retry);
    - stream versions start at 1 and have no gaps; global positions increase
      in the order readers see events, and a reader of the global log never
      skips an event that commits late;
    - driver errors are translated into ``EventStoreError`` subclasses.
    """

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append ``events`` to one stream if it is at ``expected_version``."""
        ...

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically, checking each expected version."""
        ...

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        direction: Direction = Direction.FORWARDS,
        limit: int | None = None,
    ) -> list[RecordedEvent[Event]]:
        """Return a stream's events from ``from_version`` (inclusive) in ``direction``."""
        ...

    def read_all(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Iterate the global log after position ``after``, fetching in batches."""
        ...

    def subscribe(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Subscription:
        """Follow the global log after position ``after``: catch up, then go live.

        ``event_types`` and ``stream_prefix`` filter as ``read_all``'s do, in
        the store, so events a consumer does not handle are never decoded.
        """
        ...

    async def log_position(self) -> int:
        """Return the global position of the last event ``read_all`` would return now.

        ``0`` for an empty log. It never names a position that a reader of the
        global log cannot see yet: ``read_all(after=...)`` from a checkpoint at
        or above it returns nothing new until more events commit.
        """
        ...

    async def count_events(
        self,
        *,
        after: int = 0,
        before: int | None = None,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> int:
        """Return how many events ``read_all`` would return in positions ``(after, before]``.

        The filters are those of ``read_all``; ``before=None`` counts to the end
        of what is visible now. Positions may be sparse, so subtracting two of
        them does not count events: this does (for example a projection's lag).
        """
        ...

    async def stream_version(self, stream_id: str) -> int | None:
        """Return the version of a stream's last event, or ``None`` if it has none."""
        ...

    async def delete_stream(
        self, stream_id: str, *, hard: bool = False, expected_version: ExpectedVersion = ANY
    ) -> None:
        """Delete a stream: soft (hidden, version kept) or hard (erased)."""
        ...

    async def get_stream_metadata(self, stream_id: str) -> Mapping[str, Any]:
        """Return a stream's metadata (empty if none was set)."""
        ...

    async def set_stream_metadata(self, stream_id: str, metadata: Mapping[str, Any]) -> None:
        """Replace a stream's metadata."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """Keeps snapshots of streams.

    An implementer guarantees that ``load_snapshot`` returns the snapshot with
    the highest version at or below ``at_or_below``, and that a snapshot never
    changes the stream's events.
    """

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one of the same stream and version."""
        ...

    async def load_snapshot(
        self, stream_id: str, *, at_or_below: int | None = None
    ) -> Snapshot | None:
        """Return the latest snapshot of the stream at or below a version, if any."""
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Keeps how far each named consumer has processed the global log.

    An implementer guarantees that a saved checkpoint is durable once
    ``save_checkpoint`` returns, and, where the backend has transactions, that it
    can be saved in the same transaction as the consumer's effects.
    """

    async def load_checkpoint(self, consumer: str) -> int | None:
        """Return the consumer's last processed global position, or ``None``."""
        ...

    async def save_checkpoint(self, consumer: str, position: int) -> None:
        """Record that the consumer processed everything up to ``position``."""
        ...


@runtime_checkable
class StoreTransaction(EventStore, SnapshotStore, CheckpointStore, Protocol):
    """A store bound to one open transaction of its backend.

    Everything done through it (appends, snapshots, checkpoints, and the
    backend's own access to the transaction, such as a PostgreSQL
    ``connection`` or SQLite ``run``) commits together or not at all.
    ``subscribe`` may refuse: a subscription follows what commits.
    """


@runtime_checkable
class TransactionalEventStore(EventStore, SnapshotStore, CheckpointStore, Protocol):
    """An event store whose writes can join one transaction with the caller's own.

    An implementer guarantees that ``transaction()`` yields a
    ``StoreTransaction`` whose writes commit when the block ends and roll back,
    all of them, if it raises; that readers of the global log never see a
    rolled-back event; and that subscribers learn of the committed events.
    """

    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """Open a transaction; it commits when the block ends, and rolls back if it raises."""
        ...
