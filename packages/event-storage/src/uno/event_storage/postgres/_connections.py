"""Connections borrowed from the pool, and driver errors turned into the store's."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import psycopg_pool
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from uno.event_storage.exceptions import (
    StoreConfigurationError,
    StoreUnavailable,
)
from uno.event_storage.postgres._arrays import BinaryArray

if TYPE_CHECKING:
    from uno.event_storage.postgres._store import PostgresEventStore

__all__ = [
    "UNAVAILABLE",
    "BorrowedConnections",
    "Loan",
    "background",
    "failure_reason",
    "open_transaction",
    "translated",
]

UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout, OSError)
_KEEP_FOR = 30.0  # seconds a borrowed connection serves before it goes back to the pool
_IDLE_FOR = 1.0  # seconds an unused borrowed connection waits before it goes back


class BorrowedConnections:
    """A LIFO free-list of connections borrowed from the pool: a checkout in a microsecond.

    ``pool.connection()`` costs 40-90 µs a checkout (a lock, a waiting queue,
    logging, statistics); popping a list costs about one. Each connection
    keeps one cursor, reused by the store's own statements: a new cursor per
    statement costs another 30-40 µs (a kept cursor holds its last result, at
    most one page of a read, until its next statement). A connection goes back
    on the list only if it is open and idle (no transaction, no statement under
    way); any other goes back to the pool, which rolls it back or replaces it. A borrowed
    connection returns to the pool ``_KEEP_FOR`` seconds after it was
    borrowed, so the pool's ``max_lifetime`` still applies, and ``_IDLE_FOR``
    seconds after its last use, so the store holds no more connections than it
    uses and other users of a shared pool get the rest. The list never holds
    more than the pool's ``max_size``: each of its connections is one the pool
    lent.
    """

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        # (the connection's cursor, when it is due back to the pool, when it was last used)
        self._free: list[tuple[AsyncCursor[TupleRow], float, float]] = []
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    def cursor(self) -> Loan:
        """Return a context that lends a connection's cursor for the block."""
        return Loan(self, reuse=True, cursor=True)

    def borrow(self, *, reuse: bool = True) -> Loan:
        """Return a context that lends a connection; ``reuse=False`` returns it to the pool."""
        return Loan(self, reuse=reuse, cursor=False)

    async def get(self) -> tuple[AsyncCursor[TupleRow], float]:
        """Return a connection's cursor and when the connection is due back to the pool."""
        if self._free:
            if not self.pool.closed:
                cur, due, _ = self._free.pop()
                return cur, due
            await self.release()  # the pool closes them; getconn says it is closed
        conn = await self.pool.getconn()
        BinaryArray.register(conn)
        return conn.cursor(), monotonic() + _KEEP_FOR

    async def put(self, cur: AsyncCursor[TupleRow], due: float, *, reuse: bool = True) -> None:
        """Keep the connection for the next checkout if it is clean, else give it back."""
        conn = cur.connection
        now = monotonic()
        if (
            reuse
            and now < due
            and conn.pgconn.transaction_status == TransactionStatus.IDLE
            and not self._closed
            and not self.pool.closed
        ):
            self._free.append((cur, due, now))
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(_IDLE_FOR, self._return_idle)
            return
        with anyio.CancelScope(shield=True):
            await self.pool.putconn(conn)

    async def release(self) -> None:
        """Give every free connection back to the pool."""
        free, self._free = self._free, []
        with anyio.CancelScope(shield=True):
            await self._give_back([cur.connection for cur, _, _ in free])

    async def close(self) -> None:
        """Give every free connection back, and keep none from now on."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        await self.release()

    def recover(self) -> None:
        """After a lost link: give the free connections back, then have the pool check them.

        After a database restart, the dead ones are thus replaced before they
        are handed out again; none is lent from the list meanwhile.
        """
        free, self._free = self._free, []
        background(self._recover([cur.connection for cur, _, _ in free]))

    async def _recover(self, conns: list[AsyncConnection[TupleRow]]) -> None:
        await self._give_back(conns)
        if not self.pool.closed:
            await self.pool.check()

    def _return_idle(self) -> None:
        self._sweep = None
        idle_since = monotonic() - _IDLE_FOR
        idle = [entry for entry in self._free if entry[2] <= idle_since]
        if idle:
            self._free = [entry for entry in self._free if entry[2] > idle_since]
            background(self._give_back([cur.connection for cur, _, _ in idle]))
        if self._free:
            self._sweep = asyncio.get_running_loop().call_later(_IDLE_FOR, self._return_idle)

    async def _give_back(self, conns: list[AsyncConnection[TupleRow]]) -> None:
        for conn in conns:
            await self.pool.putconn(conn)


class Loan:
    """``async with``: a connection (or its cursor) of a ``BorrowedConnections``, for one block."""

    __slots__ = ("_cur", "_cursor", "_due", "_lender", "_reuse")

    def __init__(self, lender: BorrowedConnections, *, reuse: bool, cursor: bool) -> None:
        self._lender = lender
        self._reuse = reuse
        self._cursor = cursor

    async def __aenter__(self) -> Any:
        self._cur, self._due = await self._lender.get()
        return self._cur if self._cursor else self._cur.connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._lender.put(self._cur, self._due, reuse=self._reuse)


@contextmanager
def translated(connections: BorrowedConnections | None = None) -> Iterator[None]:
    """Turn driver errors about the link to the database into ``StoreUnavailable``.

    With ``connections``, also start a check of the idle ones, so that after a
    database restart the dead ones are replaced before they are handed out.
    """
    try:
        yield
    except psycopg_pool.PoolClosed as exc:
        raise StoreConfigurationError("the event store is closed; open it again") from exc
    except psycopg.errors.InFailedSqlTransaction as exc:
        raise StoreConfigurationError(
            "an earlier statement of this transaction failed, so PostgreSQL refuses the rest: "
            "leave the transaction block (it rolls back) and retry the whole unit of work"
        ) from exc
    except UNAVAILABLE as exc:
        if connections is not None:
            connections.recover()
        raise StoreUnavailable("postgresql", failure_reason(exc)) from exc


_tasks: set[asyncio.Task[None]] = set()
# The store whose transaction this task has open, and the streams that transaction locked.
open_transaction: contextvars.ContextVar[tuple[PostgresEventStore, set[str]] | None] = (
    contextvars.ContextVar("uno_event_storage_open_transaction", default=None)
)


def background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` without waiting for it, keeping a reference until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def failure_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
