"""Leases on PostgreSQL: a session-level advisory lock held on a connection of its own.

Each held lease is ``pg_try_advisory_lock(classid, objid)`` on a dedicated
autocommit connection (not one of the store's pool), keyed by a 64-bit BLAKE2b
hash of the store's schema, table prefix and the lease's name, so that stores
sharing a database do not contend. The lock lives exactly as long as that
connection's session: ``release`` unlocks and closes it, and a process that
dies, or whose connection is cut, loses its leases when PostgreSQL ends the
session. ``check`` asks the server whether the session still holds the lock.
"""

from __future__ import annotations

import hashlib
import struct

import anyio
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from uno.event_storage.exceptions import StoreUnavailable
from uno.events import Lease

__all__ = ["PostgresLease", "PostgresLeaseStore", "advisory_lock_key"]

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
_HOLDS_LOCK = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND objsubid = 2 "
    "AND classid::bigint = %s AND objid::bigint = %s)"
)


def advisory_lock_key(namespace: str, name: str) -> tuple[int, int]:
    """Return the ``(classid, objid)`` pair of signed 32-bit keys of a lease's advisory lock."""
    digest = hashlib.blake2b(
        f"{namespace}\x00{name}".encode(), digest_size=8, person=b"uno.lease"
    ).digest()
    classid, objid = struct.unpack(">ii", digest)
    return classid, objid


class PostgresLease:
    """A lease held by one PostgreSQL session; see ``PostgresLeaseStore``."""

    def __init__(
        self,
        connection: AsyncConnection[TupleRow],
        name: str,
        key: tuple[int, int],
        backend_pid: int,
        check_timeout: float,
    ) -> None:
        self._connection: AsyncConnection[TupleRow] | None = connection
        self._name = name
        self._key = key
        self._backend_pid = backend_pid
        self._check_timeout = check_timeout

    @property
    def name(self) -> str:
        """The name the lease claims."""
        return self._name

    @property
    def backend_pid(self) -> int:
        """The process id of the PostgreSQL session that holds the lock (see pg_stat_activity)."""
        return self._backend_pid

    async def check(self) -> bool:
        """Return whether the session still holds the lock; once ``False``, always ``False``.

        A broken connection, a lock that is gone, or no answer within
        ``check_timeout`` seconds all count as lost: the connection is then
        closed, so a session that may still hold the lock gives it up.
        """
        connection = self._connection
        if connection is None:
            return False
        held = False
        with anyio.move_on_after(self._check_timeout):
            try:
                cursor = await connection.execute(
                    _HOLDS_LOCK, [self._key[0] & 0xFFFFFFFF, self._key[1] & 0xFFFFFFFF]
                )
                row = await cursor.fetchone()
                held = bool(row and row[0])
            except psycopg.Error:
                held = False
        if not held:
            await self._close()
        return held

    async def release(self) -> None:
        """Unlock and close the session; safe to call twice and after the lease was lost."""
        connection = self._connection
        if connection is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                with anyio.move_on_after(self._check_timeout):
                    await connection.execute("SELECT pg_advisory_unlock(%s, %s)", list(self._key))
            except psycopg.Error:
                pass  # closing the session below releases the lock anyway
            await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await connection.close()

    def __repr__(self) -> str:
        state = "held" if self._connection is not None else "lost"
        return f"<PostgresLease {self._name!r} {state} by backend {self._backend_pid}>"


class PostgresLeaseStore:
    """Grants leases that at most one session of a PostgreSQL database holds at a time.

    Get one from ``PostgresEventStore.lease_store()``. Each held lease keeps
    one connection open, outside the store's pool. A holder whose process
    dies loses its leases as soon as PostgreSQL notices the closed
    connection (at once on a clean close or a killed process; after TCP
    keepalive timeouts on a network partition, while the holder's ``check``
    already answers ``False`` after ``check_timeout``).

    Args:
        conninfo: The libpq connection string or URL of the database.
        namespace: What keeps these leases apart from those of other stores in
            the same database (the store uses its schema and table prefix).
        connect_timeout: Seconds to wait for a lease's connection.
        check_timeout: Seconds ``check`` (and ``release``) waits for the server.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        namespace: str,
        connect_timeout: float = 10.0,
        check_timeout: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self.check_timeout = check_timeout

    async def try_acquire(self, name: str) -> Lease | None:
        """Take the lease on ``name`` if no session holds it, else return ``None`` at once.

        Raises:
            StoreUnavailable: the database cannot be reached.
        """
        key = advisory_lock_key(self.namespace, name)
        try:
            connection = await AsyncConnection.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="uno lease",
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable("postgresql", _reason(exc)) from exc
        try:
            cursor = await connection.execute(
                "SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid()", list(key)
            )
            row = await cursor.fetchone()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await connection.close()
            if isinstance(exc, _UNAVAILABLE):
                raise StoreUnavailable("postgresql", _reason(exc)) from exc
            raise
        if row is None or not row[0]:
            await connection.close()
            return None
        return PostgresLease(connection, name, key, int(row[1]), self.check_timeout)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
