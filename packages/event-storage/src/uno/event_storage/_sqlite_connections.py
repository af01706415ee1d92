"""Threads that own SQLite connections: the writer (inline path, checkpoints) and readers.

Private to the SQLite backend; ``sqlite.py`` explains the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from uno.event_storage._core import PreparedAppend
from uno.event_storage._sqlite_schema import Recheck
from uno.event_storage.exceptions import (
    StoreConfigurationError,
    StoreUnavailable,
)

__all__ = [
    "INLINE_MAX_BYTES",
    "INLINE_TURN",
    "SYNCHRONOUS_MODES",
    "ConnectionThreads",
    "HandOff",
    "T",
    "Writer",
    "appending",
    "encoded_size",
    "in_savepoint",
    "in_write_transaction",
]

T = TypeVar("T")
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")


# -- threads that own connections -----------------------------------------------

_CHECKPOINT_PAGES = 8192
"""Estimated WAL pages the writer lets accumulate before it checkpoints (32 MiB of 4 KiB pages).

Eight times SQLite's default. The end of each checkpoint holds the writer for
a few syncs, whatever the WAL's size, so fewer, larger checkpoints cost
appends less: in the benchmark, single appends took about 15% less time than
with 1,000 pages. Larger is not better: with 16,384 pages appends were as
fast or slower, and with no checkpoints at all about twice as slow (SQLite's
lookups in the WAL index cover every 4,096-frame part not yet copied). The
price is a WAL file of up to about 32 MiB.
"""
_PIN_WAIT = 0.005
"""Seconds the checkpointer waits for the loop to commit after a new snapshot, before it primes.

While the loop appends, its next commits write frames that the snapshot
cannot see, so the checkpointer need not take the writer's lock to prime the
WAL: any moment it holds that lock, an inline append hands off to the writer
thread, whose wake-up costs the append a millisecond or more on a busy 2-core
machine.
"""
_PIN_POLL = 0.0001
"""Seconds between the checkpointer's looks at the loop's commits while it waits for them."""
_FLUSH_ROUNDS = 3
"""Most times ``_flush`` syncs a file before the last, locked checkpoint."""
_FLUSH_ENOUGH = 0.0005
"""A sync of the WAL that took less than this many seconds leaves little for the checkpoint's."""
INLINE_MAX_BYTES = 256 * 1024
"""Largest append, in encoded bytes (data plus metadata), that may run on the event loop."""
INLINE_TURN = 0.001
"""Seconds of inline appends after which the next one first lets other tasks run."""


def _pages(changes: int, size: int) -> int:
    """Estimate the WAL pages a write adds: its rows and bytes, and the index pages they touch."""
    return 3 + changes // 8 + size // 4096


def _busy(error: sqlite3.Error) -> bool:
    """Tell whether ``error`` is ``SQLITE_BUSY``: another connection holds a lock."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


class HandOff:
    """What the inline path returns when it declines: run the write on the writer thread."""


_HAND_OFF = HandOff()


class _Work:
    """One call to run on a connection's thread, and the future its caller awaits.

    ``size`` is the bytes it writes, for the writer's estimate of the WAL's growth.
    """

    __slots__ = ("abandoned", "fn", "future", "owner", "size", "translate")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        owner: object | None,
        future: asyncio.Future[Any],
        *,
        translate: bool,
        size: int = 0,
    ) -> None:
        self.fn = fn
        self.owner = owner
        self.future = future
        self.translate = translate
        self.size = size
        self.abandoned = False

    def settle(self, result: object, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            self.future.get_loop().call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled and stopped waiting
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class InlineReader:
    """A reader connection that the event loop's thread uses for small reads.

    A read in WAL mode takes no lock that a writer holds for long: it waits
    only in rare moments (another connection recovering or restarting the
    WAL), and with a busy timeout of 0 it does not wait then either. So a
    small read runs on the loop's thread, saving the two thread hand-offs that
    cost more than the read (tens of microseconds each, more when the other
    core sleeps). ``try_read`` returns ``HandOff`` instead of waiting; the
    caller then sends the read to a reader thread. What is left is the
    operating system's work: pages not in its cache are read from disk.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        translate: Callable[[sqlite3.Error], Exception],
        *,
        enabled: bool = True,
    ) -> None:
        self._connect = connect
        self._translate = translate
        self._connection: sqlite3.Connection | None = None
        self.closed = not enabled
        """Every read goes to the threads: disabled, or the store closed."""

    def try_read(self, fn: Callable[[sqlite3.Connection], T]) -> T | HandOff:
        """Run ``fn`` on the loop's connection, or return ``HandOff`` if it would wait.

        Errors other than ``SQLITE_BUSY`` propagate as ``StoreUnavailable``;
        errors of ``fn`` itself (``StreamDeleted``, ...) as they are.
        """
        if self.closed:
            return _HAND_OFF  # the reader threads say that the store is closed
        connection = self._connection
        try:
            if connection is None:
                connection = self._connection = self._connect()
                connection.execute("PRAGMA busy_timeout = 0")
            return fn(connection)
        except sqlite3.Error as error:
            if connection is not None and connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            if _busy(error) or connection is None:  # the thread opens and reports
                return _HAND_OFF
            raise self._translate(error) from error

    def close(self) -> None:
        """Close the connection (from any thread); later reads go to the threads."""
        self.closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()


class ConnectionThreads:
    """Threads that each own one SQLite connection and run the work sent to them.

    Work is taken in the order it was sent. While ``owner`` is set (a
    transaction is open on the writer), only that owner's work runs; other
    work waits, in order, until the owner is cleared. A caller that stops
    waiting (cancelled) either has its work skipped, if it has not started, or
    run to the end with the result dropped: never half of it. ``sent`` and
    ``served`` count the work sent and the work done (or skipped): they are
    equal when no work waits or runs.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        translate: Callable[[sqlite3.Error], Exception],
        *,
        threads: int,
        name: str,
    ) -> None:
        self._connect = connect
        self._translate = translate
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self.owner: object | None = None
        self.stopped = False
        self.sent = 0  # only the event loop's thread adds to it
        self.served = 0  # only the connections' threads add to it
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        owner: object | None = None,
        translate: bool = True,
        skippable: bool = True,
        size: int = 0,
    ) -> T:
        """Run ``fn(connection)`` on a thread and return its result.

        ``translate`` turns ``sqlite3`` errors into ``StoreUnavailable``;
        ``skippable=False`` runs the work even if the caller was cancelled
        before it started; ``size`` is the bytes ``fn`` writes, if any.
        """
        if self.stopped:
            raise StoreUnavailable("sqlite", "the store is closed")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise StoreConfigurationError(
                "The SQLite event store runs on asyncio (anyio's asyncio backend), not trio"
            ) from None
        future: asyncio.Future[T] = loop.create_future()
        work = _Work(fn, owner, future, translate=translate, size=size)
        self._send(work)
        try:
            return await future
        except BaseException:
            work.abandoned = skippable
            raise

    def stop(self) -> None:
        """Let every thread finish the work sent so far, then close its connection."""
        if not self.stopped:
            self.stopped = True
            for _ in self._threads:
                self._queue.put(None)

    def join(self) -> None:
        """Wait for the threads to end (blocking: call it from a worker thread)."""
        for thread in self._threads:
            thread.join()

    def _send(self, work: _Work) -> None:
        self.sent += 1
        self._queue.put(work)

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        parked: deque[_Work] = deque()
        while (work := self._next(parked)) is not None:
            runs = not work.abandoned
            result: object = None
            error: BaseException | None = None
            if runs:
                try:
                    if connection is None:
                        connection = self._open()
                    result = self._call(work, connection)
                except sqlite3.Error as exc:
                    error = self._translate(exc) if work.translate or connection is None else exc
                except BaseException as exc:  # handed to the caller, who raises it
                    error = exc
            self.served += 1
            if runs:
                work.settle(result, error)
            if connection is not None:
                self._after(connection)
        closed = StoreUnavailable("sqlite", "the store was closed before this operation ran")
        for work in parked:
            work.settle(None, closed)
        if connection is not None:
            self._close(connection)

    def _next(self, parked: deque[_Work]) -> _Work | None:
        """Return the next work that may run now, parking what must wait; ``None`` to stop."""
        while True:
            if parked and parked[0].owner is self.owner:
                return parked.popleft()
            work = self._queue.get()
            if work is None or work.owner is self.owner:
                return work
            parked.append(work)

    def _open(self) -> sqlite3.Connection:
        return self._connect()

    def _call(self, work: _Work, connection: sqlite3.Connection) -> object:
        return work.fn(connection)

    def _after(self, connection: sqlite3.Connection) -> None:
        """Run on the thread after each piece of work, once its caller has the result."""

    def _close(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            if connection.in_transaction:  # a transaction open when the store closed
                connection.rollback()
            connection.close()


class Writer(ConnectionThreads):
    """The writer thread, and the inline path that runs small appends on the event loop.

    With ``inline`` off, every write runs on the thread and SQLite checkpoints
    the WAL itself. With it on, the connection has automatic checkpoints off
    and is used from the event loop's thread too:

    - ``lock`` guards the connection. The thread holds it for each piece of
      work; the event loop only tries it (``acquire(blocking=False)``) and
      hands the write to the thread when it is taken, so it never waits.
    - ``try_inline`` runs an append on the loop's thread when no work waits or
      runs and no transaction is open, with a busy timeout of 0: when another
      connection holds SQLite's write lock, the thread takes the append and
      waits up to ``busy_timeout``.
    - A commit that finds the WAL empty, or wholly copied into the database,
      starts the WAL over and syncs its header. So the loop's thread commits
      only while the WAL is "primed": it holds a frame that no checkpoint has
      copied, or can copy before the lock is taken again. ``_prime`` writes
      such a frame at the end of each checkpoint, and on the writer thread
      after it wrote while the WAL was unprimed. A commit by another
      connection (``PRAGMA data_version`` changed) may have come with a
      checkpoint of its own, so it unprimes the WAL.
    - ``undisturbed`` tells an inline function that the previous write to
      the database was an inline append of this writer that committed, so
      what it found and wrote still holds (the store then skips the state
      query). Any work of the writer thread, a priming, or a failed inline
      attempt clears it; a commit by another connection sends the append to
      the thread anyway.
    - After about ``_CHECKPOINT_PAGES`` pages were written, a thread of its
      own checkpoints the WAL, mostly while the loop goes on appending and the
      writer thread goes on writing (``_checkpoint``).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        connect_helper: Callable[[], sqlite3.Connection],
        translate: Callable[[sqlite3.Error], Exception],
        *,
        busy_timeout: float,
        inline: bool,
    ) -> None:
        self.inline = inline
        self.lock = threading.Lock()
        self.connection: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None  # the inline path's, on ``connection``
        self._busy_timeout_ms = round(busy_timeout * 1000)
        # Guarded by the lock:
        self._waits = True  # the connection's busy timeout is busy_timeout, not 0
        self._primed = False
        self._data_version = 0  # the connection's PRAGMA data_version when it primed the WAL
        # The connection's total_changes after the last inline commit, while
        # nothing else has run on it since; -1 otherwise. See ``undisturbed``.
        self._inline_changes = -1
        self.undisturbed = False
        """While an inline function runs: nothing but inline appends wrote to the database.

        True when the previous write of any connection was an inline append
        that committed: no other connection committed since (``PRAGMA
        data_version`` is as the WAL was primed), the writer's thread ran
        nothing since, and the connection changed no rows since. What that
        append found and wrote then still holds.
        """
        self._wrote = False  # rows changed since the WAL was last primed, or tried to be
        self._pages = 0  # estimated WAL pages written, ever (only under the lock)
        self._checkpointed_pages = 0  # what _pages was when the last checkpoint began
        # Inline commits that wrote rows, ever: each wrote a frame that no snapshot
        # taken before its transaction began can see. Read without the lock.
        self._inline_commits = 0
        self._checkpoint_wanted = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoints,
            args=(connect_helper,),
            name="uno-sqlite-checkpointer",
            daemon=True,
        )
        if inline:
            self._checkpointer.start()
        super().__init__(connect, translate, threads=1, name="uno-sqlite-writer")

    def try_inline(
        self,
        first: Callable[[sqlite3.Connection], T],
        retry: Callable[[sqlite3.Connection], T],
        size: int,
    ) -> T | HandOff:
        """Append on the calling (event loop's) thread if that cannot wait; else hand off.

        ``first`` and ``retry`` each run in a transaction of their own, ``retry``
        when ``first`` raised ``Recheck``; ``size`` is the bytes they write.
        Returns ``_HAND_OFF``, having written nothing, when the writer is busy
        or unprimed, or another connection holds SQLite's write lock. Errors of
        the append propagate (``sqlite3`` errors as ``StoreUnavailable``) with
        nothing written.
        """
        if (
            self.stopped
            or self.owner is not None
            or self.sent != self.served
            or not self.lock.acquire(blocking=False)
        ):
            return _HAND_OFF
        try:
            connection = self.connection
            if connection is None or not self._primed or connection.in_transaction:
                return _HAND_OFF
            cursor = self._cursor  # one cursor for its own statements, not one each
            if cursor is None or cursor.connection is not connection:
                cursor = self._cursor = connection.cursor()
            if self._waits:
                self._set_waits(connection, False)
            changes = connection.total_changes
            try:
                result = self._inline_transaction(connection, cursor, first)
            except Recheck:
                result = self._inline_transaction(connection, cursor, retry)
            if result is not _HAND_OFF and (changed := connection.total_changes - changes):
                self._inline_commits += 1
                self._pages += _pages(changed, size)
                self._ask_for_checkpoint()
            return result
        finally:
            self.lock.release()

    def _inline_transaction(
        self,
        connection: sqlite3.Connection,
        cursor: sqlite3.Cursor,
        fn: Callable[[sqlite3.Connection], T],
    ) -> T | HandOff:
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                (version,) = cursor.execute("PRAGMA data_version").fetchone()
                if version == self._data_version:
                    self.undisturbed = self._inline_changes == connection.total_changes
                    self._inline_changes = -1  # until this one commits
                    result: T | HandOff = fn(connection)
                    cursor.execute("COMMIT")
                    self._inline_changes = connection.total_changes
                else:  # another connection committed, and may have checkpointed the WAL
                    self._primed = False
                    result = _HAND_OFF
            finally:
                self.undisturbed = False
                if connection.in_transaction:  # not committed
                    cursor.execute("ROLLBACK")
        except sqlite3.Error as error:
            if _busy(error):
                return _HAND_OFF
            raise self._translate(error) from error
        return result

    def _set_waits(self, connection: sqlite3.Connection, waits: bool) -> None:
        """Give the connection a busy timeout of ``busy_timeout`` or, if not ``waits``, 0."""
        if self._waits is not waits:
            connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms if waits else 0}")
            self._waits = waits

    def _open(self) -> sqlite3.Connection:
        connection = super()._open()
        with self.lock:
            self.connection = connection
        return connection

    def _call(self, work: _Work, connection: sqlite3.Connection) -> object:
        with self.lock:
            self._inline_changes = -1  # the thread's work may write anything
            self._set_waits(connection, True)
            changes = connection.total_changes
            try:
                return work.fn(connection)
            finally:
                changed = connection.total_changes - changes
                if changed:
                    self._wrote = True
                    self._pages += _pages(changed, work.size)

    def _after(self, connection: sqlite3.Connection) -> None:
        if not self.inline or (
            # Nothing to do, as far as one can tell without the lock.
            (self._primed or not self._wrote)
            and self._pages - self._checkpointed_pages < _CHECKPOINT_PAGES
        ):
            return
        with self.lock:
            if connection.in_transaction:
                return  # a store.transaction() is open: after it ends
            if self._wrote and not self._primed:
                self._prime(connection)
            self._ask_for_checkpoint()

    def _ask_for_checkpoint(self) -> None:
        """Wake the checkpointer if enough was written (call it holding the lock)."""
        if (
            self._pages - self._checkpointed_pages >= _CHECKPOINT_PAGES
            and not self._checkpoint_wanted.is_set()
        ):
            self._checkpoint_wanted.set()

    def _checkpoints(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """The checkpointer thread: checkpoint when asked, with three connections of its own."""
        helpers: tuple[sqlite3.Connection, sqlite3.Connection, sqlite3.Connection] | None = None
        try:
            while True:
                self._checkpoint_wanted.wait()
                if self.stopped:
                    return
                # Not under the lock: the loop may be appending. A write counted
                # between these two lines is left to the next checkpoint's count.
                self._checkpointed_pages = self._pages
                self._checkpoint_wanted.clear()
                try:
                    helpers = helpers or (connect(), connect(), connect())
                    self._checkpoint(*helpers)
                except sqlite3.Error:
                    _close_all(helpers or ())
                    helpers = None  # opened afresh next time
        finally:
            _close_all(helpers or ())

    def _checkpoint(
        self,
        checkpointer: sqlite3.Connection,
        pin: sqlite3.Connection,
        next_pin: sqlite3.Connection,
    ) -> None:
        """Copy the WAL into the database, keeping the lock only for the last part.

        First ``pin`` opens a snapshot, and the WAL gets a frame after it
        (``_pin``). Then, without the lock, a ``PASSIVE`` checkpoint copies
        what the pin sees: not that frame, so the WAL stays primed while the
        loop goes on appending; the WAL file is synced (``_flush``), so
        that the later checkpoints' syncs find little to write. Then
        ``next_pin`` opens a newer snapshot, the first pin ends, and a second
        ``PASSIVE`` checkpoint copies what was appended meanwhile, still
        without the lock; the database and the WAL are synced. (SQLite syncs
        the database only after a checkpoint that copied the whole WAL: the
        last one.) Last, under the lock, the second pin ends, a third
        checkpoint copies the little appended since, and the WAL is primed
        again, which starts it over when all of it was copied. If no pin can
        be had (see ``_pin``), the whole checkpoint is that last part. No
        checkpoint waits for another connection; one that cannot copy
        everything (another connection reads an older snapshot) leaves the
        rest for the next.
        """
        pins: list[sqlite3.Connection] = []
        try:
            if not self._pin(pin, pins):
                return
            ((_, _, database), *_) = checkpointer.execute("PRAGMA database_list").fetchall()
            wal = f"{database}-wal"
            checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            _flush(wal)
            if self._pin(next_pin, pins):
                _end_snapshot(pins.pop(0))
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                _flush(database)  # what the checkpoints copied: synced once all is
                _flush(wal)
        finally:
            with self.lock:
                while pins:
                    _end_snapshot(pins.pop())
                self._primed = False
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                connection = self.connection
                if connection is not None and not connection.in_transaction:
                    self._prime(connection)  # else the writer primes after the transaction

    def _pin(self, pin: sqlite3.Connection, pins: list[sqlite3.Connection]) -> bool:
        """Open a snapshot on ``pin`` with a frame after it in the WAL; ``False`` if it cannot.

        The frame is the loop's: the second inline commit counted after the
        snapshot opened began its transaction after it (each holds the lock
        from ``BEGIN`` to its count). While the loop appends, that takes a few
        hundred microseconds and never the lock. If the loop is quiet for
        ``_PIN_WAIT`` seconds (or the store is closing), the WAL is primed
        under the lock instead; it cannot be while a ``store.transaction()``
        is open or another process writes, and then the pin ends and
        ``False`` is returned.
        """
        pin.execute("BEGIN")
        pins.append(pin)
        pin.execute("SELECT count(*) FROM sqlite_master").fetchone()
        enough = self._inline_commits + 2
        deadline = time.monotonic() + _PIN_WAIT
        while self._inline_commits < enough and not self.stopped and time.monotonic() < deadline:
            time.sleep(_PIN_POLL)
        if self._inline_commits >= enough:
            return True
        with self.lock:
            connection = self.connection
            if connection is not None and not connection.in_transaction:
                self._prime(connection)
                if self._primed:
                    return True
        _end_snapshot(pins.pop())  # another process may be writing: try again later
        return False

    def _prime(self, connection: sqlite3.Connection) -> None:
        """Write one page (``user_version``, rewritten as it is), unless that would wait.

        The WAL is primed if it succeeds, unprimed if not (another process
        holds the write lock: the thread tries again after its next write).
        """
        self._wrote = False
        self._primed = False
        self._inline_changes = -1  # others may have committed before this data_version
        self._set_waits(connection, False)
        try:
            connection.execute("BEGIN IMMEDIATE")
            (data_version,) = connection.execute("PRAGMA data_version").fetchone()
            (user_version,) = connection.execute("PRAGMA user_version").fetchone()
            connection.execute(f"PRAGMA user_version = {int(user_version)}")
            connection.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            return
        self._data_version = data_version
        self._primed = True

    def _serve(self) -> None:
        try:
            super()._serve()
        finally:
            self._stop_checkpointer()  # if the connection was never opened

    def _close(self, connection: sqlite3.Connection) -> None:
        self._stop_checkpointer()
        with self.lock:
            self.connection = None
            self._cursor = None
            super()._close(connection)

    def _stop_checkpointer(self) -> None:
        if self._checkpointer.is_alive():
            self._checkpoint_wanted.set()  # it sees stopped, and ends
            self._checkpointer.join()


def _flush(path: str) -> None:
    """Write a file's cached pages to disk, so that the next checkpoint's sync has little to do.

    ``path`` is the WAL's or the database's. The last checkpoint runs under
    the writer's lock, syncs the WAL first and, having copied all of it, the
    database: on its own, each sync writes what was written since the last
    (megabytes: milliseconds in which the loop cannot append). Syncing the
    file from here first, without the lock, takes as long but blocks nobody;
    each round writes what was written during the one before, a few times
    less. Nothing depends on it: a file that cannot be opened or synced is
    left to the checkpoint.
    """
    sync = getattr(os, "fdatasync", os.fsync)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        for _ in range(_FLUSH_ROUNDS):
            began = time.monotonic()
            sync(fd)
            if time.monotonic() - began < _FLUSH_ENOUGH:
                return
    except OSError:
        return
    finally:
        os.close(fd)


def _end_snapshot(connection: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        connection.execute("ROLLBACK")


def _close_all(connections: tuple[sqlite3.Connection, ...]) -> None:
    for connection in connections:
        with contextlib.suppress(sqlite3.Error):
            connection.close()


def in_write_transaction(
    fn: Callable[[sqlite3.Connection], T],
) -> Callable[[sqlite3.Connection], T]:
    """Wrap ``fn`` in ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolling back if it raises."""

    def run(connection: sqlite3.Connection) -> T:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = fn(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    return run


def appending(
    first: Callable[[sqlite3.Connection], T], retry: Callable[[sqlite3.Connection], T]
) -> Callable[[sqlite3.Connection], T]:
    """Run ``first`` in a write transaction, and if it raises ``Recheck``, ``retry`` in another."""
    run_first, run_retry = in_write_transaction(first), in_write_transaction(retry)

    def run(connection: sqlite3.Connection) -> T:
        try:
            return run_first(connection)
        except Recheck:
            return run_retry(connection)

    return run


def in_savepoint(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """Wrap ``fn`` in a savepoint, so that if it raises the transaction is as it was."""

    def run(connection: sqlite3.Connection) -> T:
        connection.execute("SAVEPOINT uno_step")
        try:
            result = fn(connection)
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK TO uno_step")
                connection.execute("RELEASE uno_step")
            raise
        connection.execute("RELEASE uno_step")
        return result

    return run


def encoded_size(appends: list[PreparedAppend]) -> int:
    """Return the encoded bytes of every event of the appends."""
    size = 0
    for append in appends:
        for event in append.events:
            size += len(event.data) + len(event.metadata)
    return size


# -- the primitives, over "run this on a connection" ----------------------------
