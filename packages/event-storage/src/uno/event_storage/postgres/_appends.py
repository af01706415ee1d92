"""The PostgreSQL store's write path: one append, a group, or several in a transaction.

``AppendingStore`` is the part of ``PostgresEventStore`` that appends; it
calls the schema's append functions (``_migrations``) and maps their errors
to the contract's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow

from uno.event_storage._base import EventStoreBase
from uno.event_storage._prepared import PreparedAppend, PreparedEvent
from uno.event_storage.exceptions import (
    DuplicateEventId,
    StoreConfigurationError,
    StreamDeleted,
    TransactionOrderConflict,
    WrongExpectedVersion,
)
from uno.event_storage.postgres._append_groups import LARGEST as LARGEST_GROUPED
from uno.event_storage.postgres._append_groups import AppendGroups, GroupRefused
from uno.event_storage.postgres._arrays import (
    INT4,
    INT4_OID,
    BinaryArray,
    event_arrays,
    first_version,
)
from uno.event_storage.postgres._connections import (
    BorrowedConnections,
    open_transaction,
    translated,
)
from uno.event_storage.postgres._schema import (
    POSITION_BITS,
    SQLSTATES,
    Names,
)
from uno.event_storage.postgres._statements import Statements
from uno.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
)

logger = logging.getLogger("uno.event_storage.postgres")

__all__ = ["AppendingStore", "SeenVersions"]

# What makes a group of appends go alone, besides a deleted stream: a version
# another writer took or a stored id, and a wait for another transaction that
# the group gave up (its lock_timeout) or PostgreSQL broke (a deadlock).
_GROUP_REFUSALS = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.DeadlockDetected,
)
_MOST_EVENTS = 1 << POSITION_BITS
"""Most events one append may hold: its positions are its block, then this many."""


class SeenVersions:
    """The highest version of each stream that this store saw committed (bounded).

    An append that expects a version at or below it needs no read of that
    event: it exists (only an erasure removes events, and the append function
    checks for deletion after it inserts), and its writer's transaction id is
    older than any that a later append takes. Only autocommit reads and
    appends fill it; a transaction's own rows may still roll back.
    """

    __slots__ = ("_versions", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._versions: dict[str, int] = {}

    def holds(self, stream_id: str, version: int) -> bool:
        """Whether the event at ``version`` of the stream was seen committed."""
        return 0 < version <= self._versions.get(stream_id, 0)

    def add(self, stream_id: str, version: int) -> None:
        """Record that the stream's events up to ``version`` were seen committed."""
        versions = self._versions
        known = versions.pop(stream_id, 0)
        versions[stream_id] = max(known, version)  # newest last: the oldest goes first
        if len(versions) > self.limit:
            del versions[next(iter(versions))]

    def forget(self, stream_id: str) -> None:
        """Drop what was seen of a stream (it was deleted)."""
        self._versions.pop(stream_id, None)


class AppendingStore(EventStoreBase):
    """The write path of ``PostgresEventStore``, which sets up what it declares here."""

    names: Names
    notify: bool
    notify_delay: float
    _bound: AsyncConnection[TupleRow] | None
    _connections: BorrowedConnections
    _sql: Statements
    _locked: set[str]
    _seen: SeenVersions
    _groups: AppendGroups | None
    _announcer: asyncio.Task[None] | None
    _announce_again: bool

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return translated(self._connections)

    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[AsyncConnection[TupleRow]]:
        """Yield a connection in a transaction: the bound one's, or a new one committed on exit."""
        if self._bound is not None:
            yield self._bound
            return
        async with self._connections.borrow() as conn, conn.transaction():
            yield conn

    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        if self._bound is None:
            self._refuse_self_deadlock(appends)
        else:
            self._locked.update(append.stream_id for append in appends)
        # A cancelled append still finishes (or fails) as a whole before the
        # cancellation is delivered, so the connection returns to the pool clean.
        with anyio.CancelScope(shield=True), self._translated():
            if self._bound is not None:
                return await self._append_locked(self._bound, appends)
            if len(appends) == 1:
                results = [await self._append_alone(appends[0])]
            else:
                async with self._atomic() as conn:
                    results = await self._append_locked(conn, appends)
        for result in results:  # committed
            self._seen.add(result.stream_id, result.stream_version)
        return results

    async def _append_alone(self, append: PreparedAppend) -> AppendResult:
        """Append in an autocommit transaction, maybe shared with other appends of this store."""
        if len(append.events) > _MOST_EVENTS:  # the lock-free paths do not check it
            raise _too_many_events(_MOST_EVENTS)
        if (
            self._groups is not None
            and len(append.events) <= LARGEST_GROUPED
            and self._reads_nothing(append)
        ):
            return await self._groups.append(append)
        return await self._append_single(append)

    def _reads_nothing(self, append: PreparedAppend) -> bool:
        """Whether the append follows a version seen committed, or starts the stream."""
        expected = append.expected_version
        if expected is NO_STREAM:
            return True
        return type(expected) is int and (
            expected == 0 or self._seen.holds(append.stream_id, expected)
        )

    async def _append_together(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        """Append for several appends (distinct streams) in one autocommit transaction.

        Raises ``GroupRefused``, having written nothing, when one of them
        cannot go: a version another writer took, a stored id, a deleted stream.
        """
        streams: list[str] = []
        owners: list[bytes] = []
        versions: list[bytes] = []
        events: list[PreparedEvent] = []
        int4 = INT4.pack
        for owner, append in enumerate(appends, start=1):
            first = first_version(append)
            streams.append(append.stream_id)
            owners += [int4(owner)] * len(append.events)
            versions += [int4(v) for v in range(first + 1, first + 1 + len(append.events))]
            events += append.events
        params = [
            streams,
            BinaryArray(INT4_OID, owners, width=4),
            BinaryArray(INT4_OID, versions, width=4),
            *event_arrays(events),
        ]
        async with self._connections.cursor() as cur:
            try:
                await cur.execute(self._sql.append_group, params)
            except _GROUP_REFUSALS as exc:
                raise GroupRefused from exc
            except psycopg.Error as exc:
                if exc.sqlstate == SQLSTATES["stream_deleted"]:
                    raise GroupRefused from exc
                raise
            row = await cur.fetchone()
        assert row is not None  # the function always returns one row
        base, results, end = row[0], [], 0
        for append in appends:
            end += len(append.events)
            results.append(
                AppendResult(
                    stream_id=append.stream_id,
                    stream_version=first_version(append) + len(append.events),
                    global_position=base + end - 1,
                )
            )
        return results

    async def _append_single(self, append: PreparedAppend) -> AppendResult:
        """Append in an autocommit transaction of one statement."""
        async with self._connections.cursor() as cur:
            try:
                return await self._append_one(cur, append, alone=True)
            except psycopg.errors.UniqueViolation:
                # A stored id (a retry, or a duplicate) or a version another writer
                # took: this time the function takes the stream's lock, looks the ids
                # up, and tells which it is.
                return await self._append_one(cur, append, alone=False)

    async def _append_locked(
        self, conn: AsyncConnection[Any], appends: list[PreparedAppend]
    ) -> list[AppendResult]:
        """Append in ``conn``'s transaction, holding every stream's lock."""
        cur = conn.cursor()
        await cur.execute(
            # Every stream's lock, in one order, before any write: no deadlock, and
            # this transaction's id comes after every earlier locked append to them.
            "SELECT pg_advisory_xact_lock(hashtextextended(s, 7)) FROM unnest(%s::text[]) AS s",
            [sorted(a.stream_id for a in appends)],
        )
        return [await self._append_one(cur, append, alone=False) for append in appends]

    def _refuse_self_deadlock(self, appends: list[PreparedAppend]) -> None:
        """Refuse an append that would wait for a stream lock held by this task's transaction."""
        current = open_transaction.get()
        if current is None or current[0] is not self:
            return
        held = current[1].intersection(a.stream_id for a in appends)
        if held:
            raise StoreConfigurationError(
                f"this task's open transaction holds {min(held)!r}: append through the "
                "store that store.transaction() yielded (this append would wait for it forever)"
            )

    async def _append_one(
        self, cur: AsyncCursor[TupleRow], append: PreparedAppend, *, alone: bool
    ) -> AppendResult:
        """Append with one call of the append function, in the cursor's transaction.

        ``alone=True`` says that the call is its autocommit transaction's only
        statement: the function then inserts without looking the event ids
        up, and a stored one raises ``UniqueViolation`` (call again with
        ``alone=False``, which looks them up). Inside a transaction that error
        would abort it: pass ``False``.
        """
        arrays = event_arrays(append.events)
        try:
            if alone and self._reads_nothing(append):
                # Nothing to read first: the small function (schema version 4).
                await cur.execute(
                    self._sql.append_known, [append.stream_id, first_version(append), *arrays]
                )
            else:
                expected = append.expected_version
                # The append function's 'known' state is the small function's case.
                state = (
                    "any"
                    if expected is ANY
                    else "no_stream"
                    if expected is NO_STREAM
                    else "stream_exists"
                    if expected is STREAM_EXISTS
                    else "exact"
                )
                version = expected if isinstance(expected, int) else None
                await cur.execute(
                    self._sql.append, [append.stream_id, version, state, *arrays, alone]
                )
        except psycopg.Error as exc:
            error = _contract_error(exc, append)
            if error is exc:
                raise  # not the contract's: _translated handles a lost link
            raise error from exc
        row = await cur.fetchone()
        assert row is not None  # the function always returns one row
        return AppendResult(
            stream_id=append.stream_id, stream_version=row[0], global_position=row[1]
        )

    def _committed(self) -> None:
        if self._bound is not None:
            return  # the transaction's owner announces after its commit
        super()._committed()
        if self.notify:
            self._announce_again = True
            if self._announcer is None or self._announcer.done():
                self._announcer = asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        """Send NOTIFY after commits: at once after a quiet spell, then one per ``notify_delay``.

        Commits while a notification is sent, or during the ``notify_delay``
        after it, are announced together by one more at the end of that wait.
        """
        while self._announce_again:
            self._announce_again = False
            try:
                async with self._connections.borrow() as conn:
                    await conn.execute(self._sql.announce, [self.names.channel])
            except Exception:
                logger.warning("could not notify subscribers; they will poll", exc_info=True)
                return
            await anyio.sleep(self.notify_delay)


def _too_many_events(most: int | str) -> StoreConfigurationError:
    return StoreConfigurationError(
        f"one append may hold at most {most} events; split it into several appends"
    )


def _contract_error(exc: psycopg.Error, append: PreparedAppend) -> Exception:
    """Map the append function's SQLSTATEs to the contract's errors; return others as they are."""
    state = exc.sqlstate
    message = exc.diag.message_primary or ""
    if state == SQLSTATES["wrong_expected_version"]:
        return WrongExpectedVersion(append.stream_id, append.expected_version, int(message) or None)
    if state == SQLSTATES["duplicate_event_id"]:
        stored = set(message.split(","))
        return DuplicateEventId(
            append.stream_id,
            [
                e.event_id
                for e in append.events
                if e.event_id is not None and str(e.event_id) in stored
            ],
        )
    if state == SQLSTATES["stream_deleted"]:
        return StreamDeleted(append.stream_id, hard=message == "hard")
    if state == SQLSTATES["transaction_order_conflict"]:
        return TransactionOrderConflict(append.stream_id)
    if state == SQLSTATES["too_many_events"]:
        return _too_many_events(message)
    return exc
