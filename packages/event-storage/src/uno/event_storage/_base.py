"""The public event store API, over a backend's primitives.

A backend subclasses ``EventStoreBase`` and implements the ``_``-prefixed
primitives; the base validates and encodes appends (``_prepared``) and decodes
rows (``_decoding``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Collection,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, ClassVar, NoReturn, Self
from uuid import UUID

import anyio
import msgspec

from uno.event_storage import _telemetry
from uno.event_storage._arguments import (
    MAX_VERSION,
    check_count,
    check_direction,
    check_position,
    check_stream_prefix,
    check_type_names,
    check_version,
    encode_stream_metadata,
)
from uno.event_storage._decoding import Decoding
from uno.event_storage._prepared import (
    DEFAULT_MAX_EVENT_SIZE,
    EMPTY_METADATA,
    WALK_BATCH,
    PreparedAppend,
    PreparedEvent,
    Row,
    new_tuple,
    validate_expected,
)
from uno.event_storage._subscription import Notifier, PollingSubscription
from uno.event_storage.exceptions import StoreConfigurationError
from uno.events import (
    ANY,
    AppendResult,
    Direction,
    Event,
    EventRegistry,
    ExpectedVersion,
    JsonSerializer,
    NewEvent,
    RawEvent,
    RecordedEvent,
    Serializer,
    Snapshot,
    StreamAppend,
    validate_stream_id,
)
from uno.events.exceptions import (
    DuplicateEventId,
    EventTooLarge,
    InvalidArgument,
    UnknownEventType,
)

__all__ = ["EventStoreBase", "TransactionScope"]


class EventStoreBase(Decoding, abc.ABC):
    """The public event store API, over a backend's primitives.

    Args:
        registry: The event classes and upcasters to read and write with.
        serializer: How event data and metadata become bytes; JSON by default.
        max_event_size: Largest encoded event (data plus metadata) an append
            accepts, in bytes; larger ones raise ``EventTooLarge`` before
            anything is written.
        poll_interval: Seconds between polls of a subscription that waits for
            events written by other processes.
    """

    backend: ClassVar[str]
    """The backend's name in telemetry and errors, such as ``"postgresql"``."""

    def __init__(
        self,
        registry: EventRegistry,
        *,
        serializer: Serializer | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        poll_interval: float = 0.5,
    ) -> None:
        if max_event_size < 1:
            raise StoreConfigurationError(f"max_event_size must be >= 1, got {max_event_size}")
        if poll_interval <= 0:
            raise StoreConfigurationError(f"poll_interval must be > 0, got {poll_interval}")
        self.registry = registry
        self.serializer: Serializer = serializer or JsonSerializer(registry)
        self.max_event_size = max_event_size
        self.poll_interval = poll_interval
        self._notifier = Notifier()
        self._telemetry = _telemetry.StoreTelemetry(self.backend)

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the store's connections and wake its subscriptions so they end."""
        self._notifier.close()

    # -- writing ---------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append ``events`` to one stream if it is at ``expected_version``.

        Raises:
            WrongExpectedVersion: the stream is elsewhere; nothing was written.
            DuplicateEventId: some of the event ids are already stored.
            StreamDeleted: the stream was deleted.
            InvalidArgument: an argument is out of range or of the wrong type.
            InvalidStreamId, EventTooLarge, UnregisteredEvent, EventEncodeError:
                a bad stream id or event; nothing was written.
            StoreUnavailable: the database cannot be reached.
        """
        prepared = self._prepare(stream_id, events, expected_version)
        if _telemetry.active():
            with self._telemetry.append(stream_id, len(prepared.events)):
                (result,) = await self._write([prepared])
        else:  # nothing would record the span or the metrics
            (result,) = await self._write([prepared])
        self._committed()
        return result

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically: every stream's events, or none.

        Each stream's expected version is checked; a stream may appear once.
        """
        for index, item in enumerate(appends):
            if not isinstance(item, StreamAppend):
                raise InvalidArgument(f"appends[{index}]", item, "a StreamAppend")
        prepared = [self._prepare(a.stream_id, a.events, a.expected_version) for a in appends]
        seen = [p.stream_id for p in prepared]
        if len(set(seen)) != len(seen):
            raise StoreConfigurationError(
                "append_streams got the same stream twice; merge its events into one StreamAppend"
            )
        ids: set[UUID] = set()
        for part in prepared:
            part_ids = {event.event_id for event in part.events if event.event_id is not None}
            if ids & part_ids:
                raise DuplicateEventId(part.stream_id, sorted(ids & part_ids))
            ids |= part_ids
        if not prepared:
            return []
        if _telemetry.active():
            with self._telemetry.append(
                ",".join(seen[:3]), sum(len(p.events) for p in prepared), streams=len(prepared)
            ):
                results = await self._write(prepared)
        else:
            results = await self._write(prepared)
        self._committed()
        return results

    def _prepare(
        self, stream_id: str, events: Sequence[Event | NewEvent], expected: ExpectedVersion
    ) -> PreparedAppend:
        validate_stream_id(stream_id)
        if type(expected) is not int or not 0 <= expected <= MAX_VERSION:  # else valid as it is
            expected = validate_expected(expected)
        if type(events) is not list and (
            isinstance(events, (str, bytes, Event, NewEvent)) or not isinstance(events, Sequence)
        ):
            raise InvalidArgument("events", events, "a list of Event or NewEvent")
        if not events:
            raise StoreConfigurationError(f"an append to {stream_id!r} needs at least one event")
        encode = self.serializer.encode
        limit = self.max_event_size
        prepared: list[PreparedEvent] = []
        event_id: UUID | None
        # Only ids the caller chose can repeat; the backend assigns the others.
        chosen: set[UUID] | None = None
        for item in events:
            if isinstance(item, NewEvent):
                event, event_id = item.data, item.event_id
                metadata = (
                    b""
                    if item.metadata == EMPTY_METADATA
                    else self.serializer.encode_metadata(item.metadata)
                )
                if chosen is None:
                    chosen = {event_id}
                elif event_id in chosen:
                    raise DuplicateEventId(stream_id, [event_id])
                else:
                    chosen.add(event_id)
            else:
                event, event_id, metadata = item, None, b""
            data = encode(event)
            cls = type(event)
            if len(data) + len(metadata) > limit:
                raise EventTooLarge(stream_id, cls.event_type, len(data) + len(metadata), limit)
            # tuple.__new__ skips the NamedTuple's own __new__, a Python call per event.
            prepared.append(
                new_tuple(
                    PreparedEvent, (event_id, cls.event_type, cls.event_version, data, metadata)
                )
            )
        return new_tuple(PreparedAppend, (stream_id, expected, prepared))

    # -- reading ---------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        direction: Direction = Direction.FORWARDS,
        limit: int | None = None,
    ) -> list[RecordedEvent[Event]]:
        """Return a stream's events from ``from_version`` (inclusive) in ``direction``.

        ``from_version`` defaults to the first event going forwards and the last
        going backwards. A stream without events reads as an empty list.

        Raises:
            StreamDeleted: the stream was deleted.
        """
        validate_stream_id(stream_id)
        if from_version is not None:
            check_version("from_version", from_version)
        if direction is not Direction.FORWARDS:
            check_direction(direction)
        if limit is not None:
            check_count("limit", limit)
            if limit == 0:
                return []
        with self._telemetry.read("read_stream", stream_id):
            rows = await self._read_stream(
                stream_id, from_version, direction is Direction.BACKWARDS, limit
            )
        return self._decode(rows, stream_id)

    async def read_all(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Iterate the global log after position ``after`` up to its current end.

        Fetches ``batch_size`` events at a time. ``event_types`` keeps only those
        type names; ``stream_prefix`` keeps streams whose id starts with it
        (a category such as ``"account-"``).
        """
        async with self._pages(after, event_types, stream_prefix, batch_size) as pages:
            async for rows in pages:
                for events in self._decode_chunks(rows):
                    for event in events:
                        yield event

    async def read_all_raw(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RawEvent]:
        """Iterate the global log as ``read_all`` does, but as stored bytes, undecoded.

        It reads what ``read_all`` cannot: an event whose data no longer
        matches its class, or whose type this process does not register.
        When ``read_all`` raises ``EventDecodeError``, ``UnknownEventType`` or
        ``UpcastError`` (each names the row's ``position``), a consumer can
        read that row with ``read_all_raw(after=error.position - 1,
        batch_size=1)``, keep its bytes, and go on from ``error.position``.
        """
        async with self._pages(after, event_types, stream_prefix, batch_size) as pages:
            async for rows in pages:
                for row in rows:
                    yield RawEvent(
                        event_id=row[0],
                        stream_id=row[1],
                        stream_version=row[2],
                        global_position=row[3],
                        recorded_at=row[4],
                        event_type=row[5],
                        event_version=row[6],
                        data=bytes(row[7]),
                        metadata=bytes(row[8]),
                    )

    def _pages(
        self,
        after: int,
        event_types: Collection[str] | None,
        stream_prefix: str | None,
        batch_size: int,
    ) -> contextlib.aclosing[AsyncGenerator[list[Row], None]]:
        """Return ``_read_pages`` for ``read_all``'s arguments, closed when the block ends."""
        types = _checked_log_read(after, event_types, stream_prefix, batch_size)
        return contextlib.aclosing(self._read_pages(after, batch_size, types, stream_prefix))

    async def _read_pages(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> AsyncGenerator[list[Row], None]:
        """Yield ``read_all``'s pages of rows: one ``_read_all`` after another.

        A backend may override it to fetch the next page while the caller
        decodes this one; closing the iterator must then stop that fetch.
        """
        position = after
        while True:
            rows, scanned_to = await self._read_page(position, limit, event_types, stream_prefix)
            yield rows
            if scanned_to is None:
                return
            position = scanned_to

    async def _read_page(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        """Run one traced ``_read_all``."""
        with self._telemetry.read("read_all", None):
            return await self._read_all(after, limit, event_types, stream_prefix)

    def subscribe(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 500,
    ) -> PollingSubscription:
        """Follow the global log after ``after``: catch up, then yield events as they commit.

        Use it as ``async with store.subscribe(after=checkpoint) as events:`` and
        ``async for event in events``; leaving the block stops it.
        ``event_types`` and ``stream_prefix`` filter as ``read_all``'s do, in
        the store: an event of another type is never decoded, so a type this
        process does not register cannot stop a subscription that filters it out.
        """
        types = _checked_log_read(after, event_types, stream_prefix, batch_size)
        return PollingSubscription(
            self, after=after, batch_size=batch_size, event_types=types, stream_prefix=stream_prefix
        )

    async def log_position(self) -> int:
        """Return the global position of the last event ``read_all`` can return now, 0 if none.

        Use it with ``count_events`` to measure how far a consumer lags behind.
        """
        with self._telemetry.read("log_position", None):
            return await self._log_position()

    async def count_events(
        self,
        *,
        after: int = 0,
        before: int | None = None,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> int:
        """Return how many events ``read_all`` can return now in positions ``(after, before]``.

        ``before=None`` counts to the end of the visible log; the filters are
        those of ``read_all``. Positions may be sparse (PostgreSQL's are), so
        this, not a difference of positions, is a consumer's lag in events:
        ``await store.count_events(after=checkpoint)``.
        """
        check_position("after", after)
        if before is not None:
            check_position("before", before)
        types = check_type_names(event_types)
        check_stream_prefix(stream_prefix)
        if before is not None and before <= after:
            return 0
        with self._telemetry.read("count_events", None):
            return await self._count_events(after, before, types, stream_prefix)

    async def stream_version(self, stream_id: str) -> int | None:
        """Return the version of a stream's last event, or ``None`` if it has none."""
        validate_stream_id(stream_id)
        version = await self._stream_version(stream_id)
        return version or None

    async def delete_stream(
        self, stream_id: str, *, hard: bool = False, expected_version: ExpectedVersion = ANY
    ) -> None:
        """Delete a stream.

        Soft deletion keeps the events in the global log but refuses reads and
        appends of the stream. Hard deletion erases its events, snapshots and
        metadata for good (for erasure requests); only a tombstone remains so the
        id is not reused.

        Raises:
            WrongExpectedVersion: the stream is not at ``expected_version``.
        """
        validate_stream_id(stream_id)
        if type(hard) is not bool:
            raise InvalidArgument("hard", hard, "True or False")
        await self._delete_stream(stream_id, hard, validate_expected(expected_version))

    async def get_stream_metadata(self, stream_id: str) -> dict[str, Any]:
        """Return a stream's metadata, empty if none was set."""
        validate_stream_id(stream_id)
        raw = await self._get_stream_metadata(stream_id)
        return dict(msgspec.json.decode(raw)) if raw else {}

    async def set_stream_metadata(self, stream_id: str, metadata: Mapping[str, Any]) -> None:
        """Replace a stream's metadata with a JSON-serializable mapping."""
        validate_stream_id(stream_id)
        raw = encode_stream_metadata(metadata, self.max_event_size)
        await self._set_stream_metadata(stream_id, raw)

    # -- snapshots -------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot, replacing one of the same stream and version."""
        if not isinstance(snapshot, Snapshot):
            raise InvalidArgument("snapshot", snapshot, "a Snapshot")
        validate_stream_id(snapshot.stream_id)
        check_version("snapshot.stream_version", snapshot.stream_version, low=1)
        cls = type(snapshot.state)
        data = self.serializer.encode(snapshot.state)
        await self._save_snapshot(
            snapshot.stream_id, snapshot.stream_version, cls.event_type, cls.event_version, data
        )

    async def load_snapshot(
        self, stream_id: str, *, at_or_below: int | None = None
    ) -> Snapshot | None:
        """Return the stream's latest snapshot at or below a version, if any.

        A snapshot whose type is no longer registered is skipped, as if absent:
        the caller replays events instead.
        """
        validate_stream_id(stream_id)
        if at_or_below is not None:
            check_version("at_or_below", at_or_below)
        found = await self._load_snapshot(stream_id, at_or_below)
        if found is None:
            return None
        version, event_type, event_version, data = found
        try:
            state = self.serializer.decode(event_type, event_version, data)
        except UnknownEventType:
            return None
        return Snapshot(stream_id=stream_id, stream_version=version, state=state)

    # -- checkpoints -----------------------------------------------------------

    async def load_checkpoint(self, consumer: str) -> int | None:
        """Return the consumer's last processed global position, or ``None``."""
        validate_stream_id(consumer)
        return await self._load_checkpoint(consumer)

    async def save_checkpoint(self, consumer: str, position: int) -> None:
        """Record that ``consumer`` processed the global log up to ``position``."""
        validate_stream_id(consumer)
        check_position("position", position)
        await self._save_checkpoint(consumer, position)

    # -- primitives a backend implements ---------------------------------------

    @abc.abstractmethod
    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        """Write every append atomically, checking versions and idempotency."""

    @abc.abstractmethod
    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        """Return rows of one stream; raise ``StreamDeleted`` for a deleted one.

        The rows' ``stream_id`` may be left ``None``: ``read_stream`` knows it.
        """

    @abc.abstractmethod
    async def _read_all(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        """Return up to ``limit`` matching rows after ``after`` in global order.

        Also return the position to continue from, or ``None`` when the scan
        reached the end of what is safe to read. Filtering may return fewer
        rows than ``limit`` before the end.
        """

    async def _log_position(self) -> int:
        """Return the position of the last event ``_read_all`` can return now, 0 if none.

        This default walks the whole log through ``_read_all``; a backend
        overrides it with one query.
        """
        last, position = 0, 0
        while True:
            rows, scanned_to = await self._read_all(position, WALK_BATCH, None, None)
            if rows:
                last = rows[-1][3]
            if scanned_to is None:
                return last
            position = scanned_to

    async def _count_events(
        self,
        after: int,
        before: int | None,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> int:
        """Count the events ``_read_all`` can return in ``(after, before]`` with these filters.

        This default walks that part of the log through ``_read_all``; a
        backend overrides it with one query.
        """
        count, position = 0, after
        while True:
            rows, scanned_to = await self._read_all(
                position, WALK_BATCH, event_types, stream_prefix
            )
            for row in rows:
                if before is not None and row[3] > before:
                    return count
                count += 1
            if scanned_to is None or (before is not None and scanned_to >= before):
                return count
            position = scanned_to

    @abc.abstractmethod
    async def _stream_version(self, stream_id: str) -> int:
        """Return the version of the stream's last event, 0 if none."""

    @abc.abstractmethod
    async def _delete_stream(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        """Delete the stream, checking ``expected`` first."""

    @abc.abstractmethod
    async def _get_stream_metadata(self, stream_id: str) -> bytes | None:
        """Return the stream's metadata as JSON bytes, if set."""

    @abc.abstractmethod
    async def _set_stream_metadata(self, stream_id: str, metadata: bytes) -> None:
        """Replace the stream's metadata."""

    @abc.abstractmethod
    async def _save_snapshot(
        self, stream_id: str, version: int, event_type: str, event_version: int, data: bytes
    ) -> None:
        """Store (or replace) a snapshot."""

    @abc.abstractmethod
    async def _load_snapshot(
        self, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        """Return ``(version, type, type version, data)`` of the latest fitting snapshot."""

    @abc.abstractmethod
    async def _load_checkpoint(self, consumer: str) -> int | None:
        """Return a consumer's checkpoint."""

    @abc.abstractmethod
    async def _save_checkpoint(self, consumer: str, position: int) -> None:
        """Store a consumer's checkpoint."""

    def _committed(self) -> None:
        """Tell subscriptions that events were committed (a backend may tell other processes)."""
        self._notifier.notify()

    async def _wait_for_events(self, ticket: anyio.Event, max_wait: float) -> None:
        """Return when new events may have been written, or after ``max_wait`` seconds.

        ``ticket`` is the notifier's ticket taken before the caller last read.
        The default hears appends made through this store object; backends that
        can hear other processes (LISTEN/NOTIFY) override it.
        """
        await self._notifier.wait(ticket, max_wait)


def _checked_log_read(
    after: object, event_types: object, stream_prefix: object, batch_size: object
) -> tuple[str, ...] | None:
    """Check the arguments of a read of the global log; return the type filter as a tuple."""
    check_position("after", after)
    check_count("batch_size", batch_size, low=1)
    check_stream_prefix(stream_prefix)
    return check_type_names(event_types)


class TransactionScope:
    """What the store objects of an open transaction share: no subscriptions, no use after it."""

    _open: bool

    def subscribe(
        self,
        *,
        after: int = 0,
        event_types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        batch_size: int = 500,
    ) -> NoReturn:
        """Refuse: subscribe on the store, which sees what transactions commit."""
        raise StoreConfigurationError(
            "subscribe() on the store, not inside a transaction: a subscription follows "
            "what transactions commit"
        )

    def _check_open(self) -> None:
        if not self._open:
            raise StoreConfigurationError(
                "This transaction has ended; open another with store.transaction()"
            )
