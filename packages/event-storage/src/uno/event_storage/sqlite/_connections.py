"""Threads that own SQLite connections: the writer (inline path, checkpoints) and readers.

Private to the SQLite backend; ``sqlite.py`` explains the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from uno.event_storage._prepared import PreparedAppend
from uno.event_storage.exceptions import (
    StoreConfigurationError,
    StoreUnavailable,
)
from uno.event_storage.sqlite._schema import Recheck

__all__ = [
    "HAND_OFF",
    "INLINE_MAX_BYTES",
    "INLINE_TURN",
    "SYNCHRONOUS_MODES",
    "ConnectionThreads",
    "HandOff",
    "T",
    "Work",
    "appending",
    "busy",
    "encoded_size",
    "in_savepoint",
    "in_write_transaction",
]

T = TypeVar("T")
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")


INLINE_MAX_BYTES = 256 * 1024
"""Largest append, in encoded bytes (data plus metadata), that may run on the event loop."""
INLINE_TURN = 0.001
"""Seconds of inline appends after which the next one first lets other tasks run."""


def busy(error: sqlite3.Error) -> bool:
    """Tell whether ``error`` is ``SQLITE_BUSY``: another connection holds a lock."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


class HandOff:
    """What the inline path returns when it declines: run the write on the writer thread."""


HAND_OFF = HandOff()


class Work:
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
            return HAND_OFF  # the reader threads say that the store is closed
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
            if busy(error) or connection is None:  # the thread opens and reports
                return HAND_OFF
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
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
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
        work = Work(fn, owner, future, translate=translate, size=size)
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

    def _send(self, work: Work) -> None:
        self.sent += 1
        self._queue.put(work)

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        parked: deque[Work] = deque()
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

    def _next(self, parked: deque[Work]) -> Work | None:
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

    def _call(self, work: Work, connection: sqlite3.Connection) -> object:
        return work.fn(connection)

    def _after(self, connection: sqlite3.Connection) -> None:
        """Run on the thread after each piece of work, once its caller has the result."""

    def _close(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            if connection.in_transaction:  # a transaction open when the store closed
                connection.rollback()
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
