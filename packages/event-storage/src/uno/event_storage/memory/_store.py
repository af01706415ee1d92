"""The in-memory event store: for tests and examples; nothing survives the process.

Every operation runs without yielding to the event loop, so it is atomic. A
transaction (``store.transaction()``) holds the store's write lock, writes in
place and keeps a journal of what it changed: until it commits, readers
outside it look through the journal at the state before it, and a rollback
puts that state back. Writes from other tasks wait for the transaction to end.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import anyio

from uno.event_storage._base import EventStoreBase, TransactionScope
from uno.event_storage._prepared import (
    PreparedAppend,
    Row,
    StoredId,
    check_expected_version,
    idempotent_result,
)
from uno.event_storage.exceptions import StoreConfigurationError, StreamDeleted
from uno.event_storage.memory._leases import InMemoryLeaseStore
from uno.events import AppendResult, EventRegistry, ExpectedVersion, SystemClock, uuid7

__all__ = ["InMemoryEventStore", "InMemoryTransaction"]

T = TypeVar("T")
_Snapshots = dict[int, tuple[str, int, bytes]]


class _Stream:
    __slots__ = ("deleted", "metadata", "rows")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.deleted: str | None = None  # None, "soft" or "hard"
        self.metadata: bytes | None = None

    def copy(self) -> _Stream:
        twin = _Stream()
        twin.rows, twin.deleted, twin.metadata = self.rows[:], self.deleted, self.metadata
        return twin


class _Data:
    """One store's state, shared by the store and its transaction."""

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.log: list[Row] = []
        self.positions: list[int] = []
        self.streams: dict[str, _Stream] = {}
        self.ids: dict[UUID, StoredId] = {}
        self.snapshots: dict[str, _Snapshots] = {}
        self.checkpoints: dict[str, int] = {}
        self.next_position = 1
        self.lock = anyio.Lock()
        self.journal: _Journal | None = None  # the open transaction's
        self.owner: object = None  # the id of the task that opened it


class _Journal:
    """What an open transaction changed: the state before it, for other readers and rollback.

    The log is appended in place (readers outside stop at ``log_length``) or,
    after a hard deletion, replaced (the original list is kept). Streams,
    snapshots and checkpoints are saved as they were before their first
    change; ``None`` means "did not exist".
    """

    def __init__(self, data: _Data) -> None:
        self.log = data.log
        self.positions = data.positions
        self.log_length = len(data.log)
        self.streams: dict[str, _Stream | None] = {}
        self.snapshots: dict[str, _Snapshots | None] = {}
        self.checkpoints: dict[str, int | None] = {}
        self.ids_added: set[UUID] = set()
        self.ids_removed: dict[UUID, StoredId] = {}

    def save_stream(self, data: _Data, stream_id: str) -> None:
        if stream_id not in self.streams:
            stream = data.streams.get(stream_id)
            self.streams[stream_id] = None if stream is None else stream.copy()

    def save_snapshots(self, data: _Data, stream_id: str) -> None:
        if stream_id not in self.snapshots:
            found = data.snapshots.get(stream_id)
            self.snapshots[stream_id] = None if found is None else dict(found)

    def save_checkpoint(self, data: _Data, consumer: str) -> None:
        if consumer not in self.checkpoints:
            self.checkpoints[consumer] = data.checkpoints.get(consumer)

    def undo(self, data: _Data) -> None:
        """Put ``data`` back as it was when the transaction began."""
        del self.log[self.log_length :]
        del self.positions[self.log_length :]
        # next_position stays: positions of rolled-back events are never reused.
        data.log, data.positions = self.log, self.positions
        for event_id in self.ids_added:
            data.ids.pop(event_id, None)
        data.ids.update(self.ids_removed)
        _restore(data.streams, self.streams)
        _restore(data.snapshots, self.snapshots)
        _restore(data.checkpoints, self.checkpoints)


def _restore(target: dict[str, T], saved: dict[str, T | None]) -> None:
    for key, value in saved.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


class _InMemoryAccess(EventStoreBase):
    """The store primitives over ``_Data``, as the store or its transaction sees it."""

    backend: ClassVar[str] = "memory"
    _data: _Data

    def _hidden(self) -> _Journal | None:
        """Return the journal whose changes this view must not see (``None``: see all)."""
        return self._data.journal

    def _recording(self) -> _Journal | None:
        """Return the journal that writes through this view record their undo in."""
        return None

    async def _exclusive(self, write: Callable[[], T]) -> T:
        """Run ``write`` (which does not yield) when no other transaction is open."""
        return write()

    # -- reading ---------------------------------------------------------------

    def _stream(self, stream_id: str) -> _Stream | None:
        hidden = self._hidden()
        if hidden is not None and stream_id in hidden.streams:
            return hidden.streams[stream_id]
        return self._data.streams.get(stream_id)

    def _live_stream(self, stream_id: str) -> _Stream | None:
        stream = self._stream(stream_id)
        if stream is not None and stream.deleted:
            raise StreamDeleted(stream_id, hard=stream.deleted == "hard")
        return stream

    def _visible_log(self) -> tuple[list[Row], list[int], int]:
        """Return the log, its positions, and how many of its rows this view sees."""
        hidden = self._hidden()
        if hidden is not None:
            return hidden.log, hidden.positions, hidden.log_length
        data = self._data
        return data.log, data.positions, len(data.log)

    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        stream = self._live_stream(stream_id)
        if stream is None:
            return []
        rows = stream.rows
        if backwards:
            end = len(rows) if from_version is None else max(0, min(from_version, len(rows)))
            start = 0 if limit is None else max(0, end - limit)
            return rows[start:end][::-1]
        start = 0 if from_version is None else max(0, from_version - 1)
        end = len(rows) if limit is None else start + limit
        return rows[start:end]

    async def _read_all(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        log, positions, end = self._visible_log()
        index = bisect.bisect_right(positions, after, 0, end)
        window = log[index : min(index + limit, end)]
        scanned_to = window[-1].global_position if len(window) == limit else None
        return list(_matching(window, event_types, stream_prefix)), scanned_to

    async def _log_position(self) -> int:
        _, positions, end = self._visible_log()
        return positions[end - 1] if end else 0

    async def _count_events(
        self,
        after: int,
        before: int | None,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> int:
        log, positions, end = self._visible_log()
        start = bisect.bisect_right(positions, after, 0, end)
        stop = end if before is None else bisect.bisect_right(positions, before, start, end)
        if event_types is None and stream_prefix is None:
            return stop - start
        return sum(1 for _ in _matching(log[start:stop], event_types, stream_prefix))

    async def _stream_version(self, stream_id: str) -> int:
        stream = self._stream(stream_id)
        return 0 if stream is None or stream.deleted else len(stream.rows)

    async def _get_stream_metadata(self, stream_id: str) -> bytes | None:
        stream = self._stream(stream_id)
        return None if stream is None else stream.metadata

    async def _load_snapshot(
        self, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        hidden = self._hidden()
        if hidden is not None and stream_id in hidden.snapshots:
            snapshots = hidden.snapshots[stream_id] or {}
        else:
            snapshots = self._data.snapshots.get(stream_id, {})
        fitting = [v for v in snapshots if at_or_below is None or v <= at_or_below]
        if not fitting:
            return None
        version = max(fitting)
        return (version, *snapshots[version])

    async def _load_checkpoint(self, consumer: str) -> int | None:
        hidden = self._hidden()
        if hidden is not None and consumer in hidden.checkpoints:
            return hidden.checkpoints[consumer]
        return self._data.checkpoints.get(consumer)

    # -- writing ---------------------------------------------------------------

    def _writable_stream(self, stream_id: str) -> _Stream:
        data, journal = self._data, self._recording()
        if journal is not None:
            journal.save_stream(data, stream_id)
        stream = data.streams.get(stream_id)
        if stream is None:
            stream = data.streams[stream_id] = _Stream()
        return stream

    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        return await self._exclusive(lambda: self._append(appends))

    def _append(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        data, journal = self._data, self._recording()
        # Check everything first, then write: an error leaves nothing behind.
        plans: list[tuple[PreparedAppend, int] | AppendResult] = []
        for append in appends:
            found = self._live_stream(append.stream_id)
            stored = {
                e.event_id: data.ids[e.event_id]
                for e in append.events
                if e.event_id is not None and e.event_id in data.ids
            }
            done = idempotent_result(append, stored)
            if done is not None:
                plans.append(done)
                continue
            current = len(found.rows) if found is not None else 0
            check_expected_version(append.stream_id, append.expected_version, current)
            plans.append((append, current))
        now = data.clock.now()
        results = []
        for plan in plans:
            if isinstance(plan, AppendResult):
                results.append(plan)
                continue
            append, current = plan
            stream = self._writable_stream(append.stream_id)
            for offset, event in enumerate(append.events, start=1):
                event_id = uuid7() if event.event_id is None else event.event_id
                row = Row(
                    event_id,
                    append.stream_id,
                    current + offset,
                    data.next_position,
                    now,
                    event.event_type,
                    event.event_version,
                    event.data,
                    event.metadata,
                )
                data.next_position += 1
                stream.rows.append(row)
                data.log.append(row)
                data.positions.append(row.global_position)
                data.ids[event_id] = StoredId(
                    row.stream_id, row.stream_version, row.global_position
                )
                if journal is not None:
                    journal.ids_added.add(event_id)
            last = stream.rows[-1]
            results.append(
                AppendResult(
                    stream_id=append.stream_id,
                    stream_version=last.stream_version,
                    global_position=last.global_position,
                )
            )
        return results

    async def _delete_stream(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        await self._exclusive(lambda: self._delete(stream_id, hard, expected))

    def _delete(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        data, journal = self._data, self._recording()
        found = data.streams.get(stream_id)
        if found is not None and found.deleted == "hard":
            return
        check_expected_version(stream_id, expected, len(found.rows) if found else 0)
        stream = self._writable_stream(stream_id)
        if not hard:
            stream.deleted = stream.deleted or "soft"
            return
        erased = {row.event_id for row in stream.rows}
        data.log = [row for row in data.log if row.event_id not in erased]
        data.positions = [row.global_position for row in data.log]
        for event_id in erased:
            stored = data.ids.pop(event_id)
            if journal is not None and event_id not in journal.ids_added:
                journal.ids_removed[event_id] = stored
        stream.rows = []
        stream.metadata = None
        stream.deleted = "hard"
        if journal is not None:
            journal.save_snapshots(data, stream_id)
        data.snapshots.pop(stream_id, None)

    async def _set_stream_metadata(self, stream_id: str, metadata: bytes) -> None:
        def set_metadata() -> None:
            found = self._data.streams.get(stream_id)
            if found is not None and found.deleted == "hard":
                raise StreamDeleted(stream_id, hard=True)
            self._writable_stream(stream_id).metadata = metadata

        await self._exclusive(set_metadata)

    async def _save_snapshot(
        self, stream_id: str, version: int, event_type: str, event_version: int, data: bytes
    ) -> None:
        def save() -> None:
            self._live_stream(stream_id)
            journal = self._recording()
            if journal is not None:
                journal.save_snapshots(self._data, stream_id)
            snapshots = self._data.snapshots.setdefault(stream_id, {})
            snapshots[version] = (event_type, event_version, data)

        await self._exclusive(save)

    async def _save_checkpoint(self, consumer: str, position: int) -> None:
        def save() -> None:
            journal = self._recording()
            if journal is not None:
                journal.save_checkpoint(self._data, consumer)
            self._data.checkpoints[consumer] = position

        await self._exclusive(save)


class InMemoryEventStore(_InMemoryAccess):
    """An event store in a Python process's memory: ``memory://``.

    Every operation is atomic because it runs without yielding to the event
    loop. ``transaction()`` groups writes that commit together. Useful for
    tests and demos.
    """

    def __init__(self, registry: EventRegistry, **options: Any) -> None:
        super().__init__(registry, **options)
        self._data = _Data()
        self._leases = InMemoryLeaseStore()

    @classmethod
    async def from_url(cls, url: str, *, registry: EventRegistry, **options: Any) -> Self:
        """Open a store for ``memory://`` (the URL holds nothing else)."""
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/"):
            raise StoreConfigurationError(f"an in-memory store's URL is 'memory://', got {url!r}")
        return cls(registry, **options)

    async def migrate(self) -> None:
        """Do nothing: memory has no schema."""

    def lease_store(self) -> InMemoryLeaseStore:
        """Return the store's lease store: leases held in this process, one per name."""
        return self._leases

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryTransaction]:
        """Open a transaction; it commits when the block ends, and rolls back if it raises.

        ``async with store.transaction() as tx:`` yields an
        ``InMemoryTransaction`` whose reads see its own writes. Until the block
        ends, other readers of the store see the state before it, and other
        tasks' writes wait. Inside the block write through ``tx``: the store
        refuses writes from the task that opened the transaction, since they
        would wait for the block to end. Leaving it with an exception
        (cancellation included) undoes every write made through ``tx``.

        Raises:
            StoreConfigurationError: this task already has a transaction open.
        """
        data = self._data
        self._refuse_inside_transaction()
        await data.lock.acquire()
        try:
            journal = data.journal = _Journal(data)
            data.owner = anyio.get_current_task().id
            tx = InMemoryTransaction(self, journal)
            try:
                yield tx
            except BaseException:
                journal.undo(data)
                raise
            finally:
                tx._open = False
                data.journal = data.owner = None
        finally:
            data.lock.release()
        self._committed()

    def _refuse_inside_transaction(self) -> None:
        owner = self._data.owner
        if owner is not None and owner == anyio.get_current_task().id:
            raise StoreConfigurationError(
                "This task is inside store.transaction(): write through the transaction "
                "(tx.append, tx.save_checkpoint, ...). A write through the store would wait "
                "for the transaction to end, which waits for this task."
            )

    async def _exclusive(self, write: Callable[[], T]) -> T:
        lock = self._data.lock
        if not lock.locked():
            return write()
        self._refuse_inside_transaction()
        async with lock:
            return write()


class InMemoryTransaction(TransactionScope, _InMemoryAccess):
    """An open transaction of an ``InMemoryEventStore``: what ``store.transaction()`` yields.

    Its reads see its own writes; its writes reach other readers, and wake
    subscriptions, when the transaction commits. ``subscribe`` is not
    available inside a transaction.
    """

    def __init__(self, store: InMemoryEventStore, journal: _Journal) -> None:
        super().__init__(
            store.registry,
            serializer=store.serializer,
            max_event_size=store.max_event_size,
            poll_interval=store.poll_interval,
        )
        self._data = store._data
        self._journal = journal
        self._open = True

    def _hidden(self) -> _Journal | None:
        self._check_open()
        return None

    def _recording(self) -> _Journal | None:
        return self._journal

    async def _exclusive(self, write: Callable[[], T]) -> T:
        self._check_open()
        return write()

    def _committed(self) -> None:
        """Wake nobody yet: the store does when the transaction commits."""


def _matching(
    rows: Iterable[Row], event_types: tuple[str, ...] | None, stream_prefix: str | None
) -> Iterable[Row]:
    for row in rows:
        if event_types is not None and row.event_type not in event_types:
            continue
        if stream_prefix is not None and not row.stream_id.startswith(stream_prefix):
            continue
        yield row
