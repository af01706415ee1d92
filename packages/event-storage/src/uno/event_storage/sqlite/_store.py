"""The SQLite event store: ``sqlite:///path/to/events.db``, uno's embedded default.

One file in WAL mode. All writes go through one writer connection, so writes
are serialised in this process and ``BEGIN IMMEDIATE`` serialises them with
other processes; global positions therefore follow commit order. A dedicated
thread owns the writer connection and takes work from a queue; reads run in
parallel on reader threads, each owning a connection, except small ones,
which run on a reader connection of the event loop's (``inline_reads``). A
caller awaits an asyncio future that the owning thread resolves. The backend
runs on asyncio (anyio's asyncio backend), not trio.

The inline fast path: a small append (up to ``inline_events`` events, 128 by
default, and 256 KiB encoded) runs on the event loop's thread, skipping the
two thread hand-offs that would otherwise cost more than the append itself,
when all of these hold:

- ``synchronous="NORMAL"`` (with ``"FULL"`` or ``"EXTRA"`` every commit
  syncs to disk, so every write goes to the writer thread);
- the writer is idle: no work waits for or runs on its thread, no
  ``store.transaction()`` is open, and its lock is free (the loop only ever
  tries the lock, it never waits for it);
- another connection does not hold SQLite's write lock: the inline attempt
  has a busy timeout of 0, and on ``SQLITE_BUSY`` it hands the append to the
  writer thread, which waits up to ``busy_timeout``;
- no other connection committed since the writer last "primed" the WAL
  (see below); if one did, this append goes to the thread.

It does not block the loop: it waits for no lock, and its commit does not
sync to disk. In WAL mode with ``synchronous="NORMAL"`` a commit only appends
pages to the WAL, unless it checkpoints (copies the WAL into the database and
syncs both) or starts the WAL over (and syncs the WAL's header). So the store
turns the writer connection's automatic checkpoints off and checkpoints on a
thread of its own, after about 8,192 pages (a WAL of up to 32 MiB); and the
loop's thread commits only while the WAL is "primed": it holds a page that no
checkpoint could copy yet, so a commit cannot start the WAL over (the
writer primes it by rewriting ``PRAGMA user_version`` with the value it has;
while the loop appends, its own commits do that, and the checkpointer holds
the writer only for the last step of a checkpoint: see ``Writer``).
A commit by another process may come with a checkpoint of that process, so
the next append goes to the writer thread, which primes the WAL again. What
is left is the operating system's work: reading pages and writing the WAL,
through its page cache (a write may wait a little while a checkpoint syncs
the same file). One gap remains: a checkpoint by another connection that no
commit of its own follows at once (``PRAGMA wal_checkpoint`` run by hand, a
replication tool, or for a few microseconds another store's checkpointer)
may let one inline commit start the WAL over, and sync its header, on the
loop.

Cancellation: an inline append runs to completion once it starts, so
cancelling its task cannot interrupt it half-way; it either did not start
(nothing is written) or committed. Inline appends let other tasks run first
once a millisecond, so a loop of appends does not starve them.

Durability: ``synchronous="NORMAL"`` (the default) survives a crash of the
process, but a power loss or OS crash may lose the last transactions before a
WAL checkpoint; ``synchronous="FULL"`` syncs every commit at some cost in
latency.

The schema is created and upgraded by ``await store.migrate()``, which runs on
open when ``auto_migrate=True`` (the default: the store is embedded and owns
its file). With ``auto_migrate=False`` an unmigrated database raises
``SchemaNotMigrated`` on every operation until someone migrates it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread

from uno.event_storage._prepared import DEFAULT_MAX_EVENT_SIZE, PreparedAppend, Row, new_tuple
from uno.event_storage.exceptions import (
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
)
from uno.event_storage.sqlite._connections import (
    INLINE_MAX_BYTES,
    INLINE_TURN,
    SYNCHRONOUS_MODES,
    ConnectionThreads,
    HandOff,
    InlineReader,
    T,
    appending,
    encoded_size,
    in_write_transaction,
)
from uno.event_storage.sqlite._leases import DEFAULT_LEASE_TTL, SQLiteLeaseStore
from uno.event_storage.sqlite._schema import SCHEMA_VERSION, SQLiteSchema, Tip, recorded_now
from uno.event_storage.sqlite._transaction import SQLiteAccess, SQLiteTransaction
from uno.event_storage.sqlite._writer import Writer
from uno.events import AppendResult, EventRegistry, Serializer

__all__ = ["INLINE_ROWS", "SQLiteEventStore", "SQLiteTransaction"]

INLINE_ROWS = 128
"""Events of a ``read_stream`` read on the event loop; any more come from a reader thread."""


class SQLiteEventStore(SQLiteAccess):
    """An event store in one SQLite file: ``sqlite:///relative.db`` or ``sqlite:////abs.db``.

    Open it with ``open_event_store`` (or ``await SQLiteEventStore.from_url``)
    and close it when done. Writes in one process are serialised through one
    connection; other processes may open the same file and write too.

    Args:
        path: The database file; created if missing (its directory must exist).
        registry, serializer, max_event_size, poll_interval: As for every store.
            ``poll_interval`` is how soon a subscription sees events that another
            process wrote; appends through this store wake subscriptions at once.
        auto_migrate: Create or upgrade the schema on open (the default).
        synchronous: ``"NORMAL"`` (survives a process crash; a power loss may
            lose the last transactions), ``"FULL"`` or ``"EXTRA"``.
        busy_timeout: Seconds to wait for another process's write lock before
            raising ``StoreUnavailable``. (Inline appends never wait: they hand
            the append to the writer thread, which does.)
        readers: Reader connections (and threads) serving reads in parallel.
        table_prefix: Prepended to the table names, ``"uno_"`` by default.
        scan_window: Most positions a filtered ``read_all`` examines per query.
        inline_events: Largest append, in events, that may run on the event
            loop when the writer is idle (see the module's documentation; at
            most 256 KiB encoded too). ``0`` sends every write to the writer
            thread, as ``synchronous="FULL"`` or ``"EXTRA"`` always does.
        inline_reads: Run small reads on the event loop, on a connection of
            its own that never waits for a lock: the first ``INLINE_ROWS``
            (128) events of a ``read_stream``, and ``load_snapshot``,
            ``load_checkpoint``, ``stream_version``, ``log_position`` and
            stream metadata. The rest of a longer stream, ``read_all`` and
            ``count_events`` run on the reader threads, as everything does
            with ``False``.
        lease_ttl: Seconds a lease of ``lease_store()`` lives without a
            renewal: how long a crashed process keeps its leases.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        registry: EventRegistry,
        serializer: Serializer | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        poll_interval: float = 0.5,
        auto_migrate: bool = True,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        readers: int = 4,
        table_prefix: str = "uno_",
        scan_window: int = 10_000,
        inline_events: int = 128,
        inline_reads: bool = True,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        super().__init__(
            registry,
            serializer=serializer,
            max_event_size=max_event_size,
            poll_interval=poll_interval,
        )
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise StoreConfigurationError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if busy_timeout < 0:
            raise StoreConfigurationError(f"busy_timeout must be >= 0 seconds, got {busy_timeout}")
        if readers < 1:
            raise StoreConfigurationError(f"readers must be >= 1, got {readers}")
        if scan_window < 1:
            raise StoreConfigurationError(f"scan_window must be >= 1, got {scan_window}")
        if inline_events < 0:
            raise StoreConfigurationError(f"inline_events must be >= 0, got {inline_events}")
        if not lease_ttl > 0:
            raise StoreConfigurationError(f"lease_ttl must be > 0 seconds, got {lease_ttl}")
        self.path = os.path.abspath(path)
        self._sql = SQLiteSchema(table_prefix)
        self._scan_window = scan_window
        self._auto_migrate = auto_migrate
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._lease_ttl = lease_ttl
        self._inline_events = inline_events if self._synchronous == "NORMAL" else 0
        self._turn_ends = 0.0  # when inline appends next let other tasks run
        self._tip: Tip | None = None  # what the last append left, if it was optimistic
        self._schema_ready = False
        self._transaction_task: asyncio.Task[Any] | None = None
        self._writer = Writer(
            lambda: self._connect(writer=True),
            lambda: self._connect(writer=False),
            self._unavailable,
            busy_timeout=busy_timeout,
            inline=self._inline_events > 0,
        )
        self._readers = ConnectionThreads(
            lambda: self._connect(writer=False),
            self._unavailable,
            threads=readers,
            name="uno-sqlite-reader",
        )
        self._inline_reader = InlineReader(
            lambda: self._connect(writer=False, any_thread=True),
            self._unavailable,
            enabled=inline_reads,
        )

    @classmethod
    async def from_url(cls, url: str, *, registry: EventRegistry, **options: Any) -> Self:
        """Open the store for a ``sqlite:///`` URL, migrating it unless ``auto_migrate=False``.

        Raises:
            StoreConfigurationError: the URL is not a file URL (``:memory:`` is
                refused: readers need a file they can open too).
            StoreUnavailable: the file cannot be opened or written.
        """
        store = cls(_path_of(url), registry=registry, **options)
        try:
            await store._open()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Finish the work already sent, close every connection, and end subscriptions."""
        await super().close()
        if self._writer.stopped:
            return
        self._writer.stop()
        self._readers.stop()
        self._inline_reader.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._join)

    def _join(self) -> None:
        self._writer.join()
        self._readers.join()

    async def migrate(self) -> None:
        """Create or upgrade the schema; safe to run twice and from two processes at once.

        Raises:
            SchemaError: the database holds a newer schema than this uno knows.
        """
        self._refuse_inside_transaction()
        sql = self._sql
        await self._writer.run(in_write_transaction(lambda c: sql.migrate(c, datetime.now(UTC))))
        self._schema_ready = True

    async def _open(self) -> int:
        """Migrate, or check the schema version; return the version found."""
        if self._auto_migrate:
            await self.migrate()
            return SCHEMA_VERSION
        have = await self._writer.run(self._sql.ready)
        self._sql.check_version(have)
        self._schema_ready = have == SCHEMA_VERSION
        return have

    async def _require_schema(self) -> None:
        have = await self._open()  # someone may have migrated since the last look
        if not self._schema_ready:
            raise SchemaNotMigrated(self.path, have, SCHEMA_VERSION)

    def lease_store(self, *, ttl: float | None = None) -> SQLiteLeaseStore:
        """Return leases shared by the processes of this machine that open this file and prefix.

        Each call returns a holder of its own. A lease lives ``ttl`` seconds
        (the store's ``lease_ttl`` by default) past its last renewal, which a
        thread of the lease store makes every third of that, so a process
        that dies keeps its leases that long. Leases rely on the wall clock
        that the holders share: they hold among the processes of one machine,
        not across machines sharing a file system.
        """
        return SQLiteLeaseStore(
            self.path,
            table_prefix=self._sql.prefix,
            ttl=self._lease_ttl if ttl is None else ttl,
            busy_timeout=self._busy_timeout,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        """Open a write transaction; it commits when the block ends, and rolls back if it raises.

        ``async with store.transaction() as tx:`` yields a ``SQLiteTransaction``
        that reads and writes inside the transaction (``tx.append``,
        ``tx.save_checkpoint``, ...), and runs your own SQL in it with
        ``await tx.run(fn)``. Other writes of this store wait until it ends, so
        keep it short. Inside the block write through ``tx``: the store refuses
        writes from the task that opened the transaction, since they would wait
        for the block to end. Entering the block waits (uncancellably) for
        other transactions and for another process's write lock, up to
        ``busy_timeout``.

        Raises:
            StoreUnavailable: another process held the write lock past
                ``busy_timeout``, or the commit failed.
        """
        self._refuse_inside_transaction()
        if not self._schema_ready:
            await self._require_schema()
        tx = SQLiteTransaction(self)
        writer = self._writer
        with anyio.CancelScope(shield=True):  # a begun transaction must be ended
            await writer.run(tx._begin, skippable=False)
        tx._open = True
        self._transaction_task = asyncio.current_task()
        try:
            try:
                yield tx
            except BaseException:
                tx._open = False
                if not writer.stopped:  # closing the store rolled it back already
                    with anyio.CancelScope(shield=True):
                        await writer.run(tx._rollback, owner=tx, skippable=False)
                raise
            tx._open = False
            with anyio.CancelScope(shield=True):
                await writer.run(tx._commit, owner=tx, skippable=False)
        finally:
            tx._open = False
            self._transaction_task = None
        self._notifier.notify()

    def _refuse_inside_transaction(self) -> None:
        # Only the task that opened the transaction is refused: another task's
        # write simply waits for the transaction to end.
        if self._transaction_task is not None and self._transaction_task is asyncio.current_task():
            raise StoreConfigurationError(
                "This task is inside store.transaction(): write through the transaction "
                "(tx.append, tx.save_checkpoint, ...). A write through the store would wait "
                "for the transaction to end, which waits for this task."
            )

    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        if not self._schema_ready:
            await self._require_schema()
        if self._transaction_task is not None:
            self._refuse_inside_transaction()
        sql, writer, now = self._sql, self._writer, recorded_now()
        if len(appends) == 1:  # the common case, without a generator per append
            count, size = len(appends[0].events), encoded_size(appends)
        else:
            count, size = sum(len(a.events) for a in appends), encoded_size(appends)

        def first(connection: sqlite3.Connection) -> list[AppendResult]:
            # Inline, right after an inline append and nothing else: start from its tip.
            tip = self._tip if writer.undisturbed else None
            results = sql.append(connection, appends, now, tip=tip)
            last = results[-1]  # the highest position: appends number their events in turn
            self._tip = new_tuple(Tip, (last.stream_id, last.stream_version, last.global_position))
            return results

        def retry(connection: sqlite3.Connection) -> list[AppendResult]:
            self._tip = None
            return sql.append(connection, appends, now, look_up_ids=True)

        if count <= self._inline_events and size <= INLINE_MAX_BYTES:
            if time.monotonic() >= self._turn_ends:
                await self._give_others_a_turn()
            results = writer.try_inline(first, retry, size)
            if not isinstance(results, HandOff):
                return results
        return await writer.run(appending(first, retry), size=size)

    async def _writing(self, fn: Callable[[sqlite3.Connection], T], *, size: int = 0) -> T:
        if not self._schema_ready:
            await self._require_schema()
        self._refuse_inside_transaction()
        return await self._writer.run(in_write_transaction(fn), size=size)

    async def _reading(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._schema_ready:
            await self._require_schema()
        return await self._readers.run(fn)

    async def _reading_small(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._schema_ready:
            await self._require_schema()
        reader = self._inline_reader
        if not reader.closed:
            if time.monotonic() >= self._turn_ends:
                await self._give_others_a_turn()
            result = reader.try_read(fn)
            if not isinstance(result, HandOff):
                return result
        return await self._readers.run(fn)

    async def _give_others_a_turn(self) -> None:
        """Let other tasks run, once every ``INLINE_TURN`` of inline work.

        Inline appends and reads never wait, so a loop of them would never let
        other tasks run. (The callers check ``_turn_ends`` themselves, to skip
        this call when no turn is due.)
        """
        await asyncio.sleep(0)
        self._turn_ends = time.monotonic() + INLINE_TURN

    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        # The first INLINE_ROWS events on the loop (most streams end there), the rest on
        # a reader thread. The two reads may see different moments: events appended
        # between them come along, and a deletion between them raises StreamDeleted.
        sql = self._sql
        first = INLINE_ROWS if limit is None else min(limit, INLINE_ROWS)
        rows = await self._reading_small(
            lambda c: sql.read_stream(c, stream_id, from_version, backwards, first)
        )
        if len(rows) < first or first == limit:  # the stream, or the limit, ends here
            return rows
        after = rows[-1].stream_version + (-1 if backwards else 1)
        rest = None if limit is None else limit - len(rows)
        return rows + await self._reading(
            lambda c: sql.read_stream(c, stream_id, after, backwards, rest)
        )

    def _connect(self, *, writer: bool, any_thread: bool = False) -> sqlite3.Connection:
        inline = writer and self._inline_events > 0
        connection = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            cached_statements=256,
            # The inline append uses the writer from the loop's thread.
            check_same_thread=not (inline or any_thread),
        )
        try:
            if writer:
                self._use_wal(connection)
                connection.execute(f"PRAGMA synchronous={self._synchronous}")
                if inline:  # the writer thread checkpoints: see Writer
                    connection.execute("PRAGMA wal_autocheckpoint=0")
                # For read models written through SQLiteTransaction.run.
                connection.execute("PRAGMA foreign_keys=ON")
            else:
                connection.execute("PRAGMA query_only=ON")
        except BaseException:
            connection.close()
            raise
        return connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise StoreConfigurationError(
                f"SQLite refused WAL mode for {self.path} (it stays in {mode!r} mode); "
                "put the database on a local file system"
            )

    def _unavailable(self, error: sqlite3.Error) -> Exception:
        name: str = getattr(error, "sqlite_errorname", type(error).__name__)
        reason = f"{error} ({name}) on {self.path}"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            reason += (
                f"; another connection held the database longer than busy_timeout="
                f"{self._busy_timeout}s"
            )
        unavailable = StoreUnavailable("sqlite", reason)
        unavailable.__cause__ = error
        return unavailable


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or parts.query or parts.fragment:
        raise StoreConfigurationError(
            f"a SQLite store's URL is 'sqlite:///relative/path.db' or "
            f"'sqlite:////absolute/path.db' (options are keyword arguments), got {url!r}"
        )
    path = unquote(parts.path[1:])
    if not path or path == ":memory:" or path.startswith("file:"):
        raise StoreConfigurationError(
            f"{url!r} names no database file. The SQLite store needs a file, which its reader "
            "connections open too (no ':memory:'): use sqlite:///events.db, or memory:// "
            "for a store that lives in the process"
        )
    return path
