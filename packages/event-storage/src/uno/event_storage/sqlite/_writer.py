"""The writer thread: the one connection every write of this process goes through.

It commits appends handed to it, and checkpoints the WAL between them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from uno.event_storage.sqlite._connections import (
    HAND_OFF,
    ConnectionThreads,
    HandOff,
    T,
    Work,
    busy,
)
from uno.event_storage.sqlite._schema import Recheck

__all__ = ["Writer"]

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


def _pages(changes: int, size: int) -> int:
    """Estimate the WAL pages a write adds: its rows and bytes, and the index pages they touch."""
    return 3 + changes // 8 + size // 4096


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
        Returns ``HAND_OFF``, having written nothing, when the writer is busy
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
            return HAND_OFF
        try:
            connection = self.connection
            if connection is None or not self._primed or connection.in_transaction:
                return HAND_OFF
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
            if result is not HAND_OFF and (changed := connection.total_changes - changes):
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
                    result = HAND_OFF
            finally:
                self.undisturbed = False
                if connection.in_transaction:  # not committed
                    cursor.execute("ROLLBACK")
        except sqlite3.Error as error:
            if busy(error):
                return HAND_OFF
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

    def _call(self, work: Work, connection: sqlite3.Connection) -> object:
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
