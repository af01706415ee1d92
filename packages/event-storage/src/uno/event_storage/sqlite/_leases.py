"""Leases on SQLite: rows of the store's ``leases`` table, kept alive by a heartbeat.

SQLite has no lock that dies with its holder, so a lease is a row that says
who holds a name until when: ``(name, generation, holder, acquired_at,
expires_at)``, times in milliseconds of the wall clock. Taking a name writes
the row if it is missing or its ``expires_at`` has passed, bumping the
generation; a thread of the lease store's own moves ``expires_at`` forward
every ``ttl / 3`` seconds for every lease it holds, and releasing sets it to 0.
Each of those is one short ``BEGIN IMMEDIATE`` transaction on a connection of
the lease store's own, never on the event store's writer, so leases never wait
behind appends (only behind SQLite's write lock, up to ``busy_timeout``).

A process that dies stops renewing, and its leases are free once their
``expires_at`` passes. A holder counts its lease lost as soon as its deadline
passes without a renewal, by the wall clock and by the monotonic clock (a
renewal's deadline is measured from before its transaction began, so the
holder gives up no later than any other process may take over). So the
lease is only as good as a clock that every holder shares: the processes of
one machine, never a network file system shared by several machines.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import anyio
import anyio.lowlevel
import anyio.to_thread

from uno.event_storage.exceptions import (
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
)
from uno.event_storage.sqlite._schema import SCHEMA_VERSION, SQLiteSchema
from uno.events import Lease

__all__ = ["DEFAULT_LEASE_TTL", "SQLiteLease", "SQLiteLeaseStore"]

logger = logging.getLogger("uno.event_storage.sqlite")

DEFAULT_LEASE_TTL = 10.0
"""Seconds a lease lives without a renewal: how long a dead holder keeps it."""

_R = TypeVar("_R")

_CURRENT = "SELECT generation, expires_at FROM {p}leases WHERE name = ?"
_TAKE = (
    "INSERT INTO {p}leases (name, generation, holder, acquired_at, expires_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET "
    "generation = excluded.generation, holder = excluded.holder, "
    "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"
)
_RENEW = (
    "UPDATE {p}leases SET expires_at = ?1 "
    "WHERE name = ?2 AND holder = ?3 AND generation = ?4 AND expires_at > ?5"
)
_RELEASE = "UPDATE {p}leases SET expires_at = 0 WHERE name = ? AND holder = ? AND generation = ?"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SQLiteLease:
    """A lease held by one ``SQLiteLeaseStore``; see there.

    ``check`` asks no database: the store's heartbeat renews the lease, and
    the lease counts as lost once its deadline passes without a renewal, or
    when a renewal finds the row taken by another holder.
    """

    def __init__(
        self,
        store: SQLiteLeaseStore,
        name: str,
        generation: int,
        expires_at: int,
        deadline: float,
    ) -> None:
        self._store = store
        self._name = name
        self._generation = generation
        self._expires_at = expires_at  # wall clock, ms: the row's, as this holder last wrote it
        self._deadline = deadline  # time.monotonic() by which a renewal must have begun
        self._lost = False
        self._released = False

    @property
    def name(self) -> str:
        """The name the lease claims."""
        return self._name

    @property
    def generation(self) -> int:
        """How many times the name was taken, this time included: a fencing token.

        It grows by one with each holder and never repeats for a name, so work
        stamped with it can refuse a stale holder's writes.
        """
        return self._generation

    @property
    def holder(self) -> str:
        """Who holds it, as stored in the table: ``host:pid:random``."""
        return self._store.holder

    async def check(self) -> bool:
        """Return whether the lease is still held; once ``False``, always ``False``."""
        return self._held()

    async def release(self) -> None:
        """Give the lease up; safe to call twice and after it was lost.

        When the database cannot be written (another process holds its write
        lock past ``busy_timeout``), the lease is given up here all the same
        and its row frees the name once it expires.
        """
        if self._released:
            return
        self._released = self._lost = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._store._release, self)

    def _held(self) -> bool:
        if self._lost:
            return False
        if time.monotonic() >= self._deadline or _wall_ms() >= self._expires_at:
            self._lost = True
            return False
        return True

    def _renewed(self, expires_at: int, deadline: float) -> None:
        if not self._lost:  # a lease seen lost stays lost, renewed row or not
            self._expires_at, self._deadline = expires_at, deadline

    def __repr__(self) -> str:
        state = "held" if self._held() else "lost"
        return f"<SQLiteLease {self._name!r} {state}, generation {self._generation}>"


class SQLiteLeaseStore:
    """Grants leases that at most one holder on this machine has at a time.

    Get one from ``SQLiteEventStore.lease_store()``: it works on the store's
    file and table prefix, so every process of this machine that opens the
    same file shares the leases (each lease store is a holder of its own, in
    one process as well). The database must be migrated (schema version 3).

    A held lease is renewed every ``ttl / 3`` seconds by a thread of the lease
    store's, which runs while it holds any lease. A holder that dies keeps
    its leases until ``ttl`` seconds after its last renewal; then another may
    take them. A holder that cannot renew in time (stopped, or the database
    locked by another process for that long) finds its lease lost by
    ``check``, at the latest when another holder may take it over.

    Args:
        path: The SQLite file; it must exist.
        table_prefix: The store's table prefix.
        ttl: Seconds a lease lives without a renewal.
        busy_timeout: Seconds to wait for another connection's write lock when
            taking or releasing a lease (a renewal waits no longer than its
            lease has left).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table_prefix: str = "uno_",
        ttl: float = DEFAULT_LEASE_TTL,
        busy_timeout: float = 5.0,
    ) -> None:
        if not ttl > 0:
            raise StoreConfigurationError(f"a lease's ttl must be > 0 seconds, got {ttl}")
        if busy_timeout < 0:
            raise StoreConfigurationError(f"busy_timeout must be >= 0 seconds, got {busy_timeout}")
        self.path = os.path.abspath(path)
        self.ttl = ttl
        self.busy_timeout = busy_timeout
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._schema = SQLiteSchema(table_prefix)
        prefix = self._schema.prefix
        self._current, self._take = _CURRENT.format(p=prefix), _TAKE.format(p=prefix)
        self._renew, self._release_sql = _RENEW.format(p=prefix), _RELEASE.format(p=prefix)
        # One lock for the connection, the held leases and the heartbeat's start and end.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._connection: sqlite3.Connection | None = None
        self._held: dict[str, SQLiteLease] = {}
        self._heartbeat: threading.Thread | None = None

    async def try_acquire(self, name: str) -> Lease | None:
        """Take the lease on ``name`` if nobody holds it, else return ``None``.

        Raises:
            StoreUnavailable: the file cannot be opened, or another connection
                held its write lock past ``busy_timeout``.
            SchemaNotMigrated: the file has no leases table yet.
        """
        # Shielded, and released if cancelled after all, since a lease nobody
        # got would be renewed for as long as the process lives.
        with anyio.CancelScope(shield=True):
            lease = await anyio.to_thread.run_sync(self._acquire, name)
        if lease is not None:
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                await lease.release()
                raise
        return lease

    def held(self) -> list[str]:
        """Return the names this lease store holds now, sorted."""
        return sorted(name for name, lease in self._held.copy().items() if lease._held())

    # -- on threads --------------------------------------------------------------

    def _acquire(self, name: str) -> SQLiteLease | None:
        with self._lock:
            mine = self._held.get(name)
            if mine is not None and mine._held():
                return None  # one holder, even within this lease store
            began = time.monotonic()
            taken = self._run(lambda c, now: self._take_row(c, name, now), self.busy_timeout)
            if taken is None:
                self._close_when_idle()
                return None
            generation, expires_at = taken
            lease = self._held[name] = SQLiteLease(
                self, name, generation, expires_at, began + self.ttl
            )
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._beat, name="uno-sqlite-leases", daemon=True
                )
                self._heartbeat.start()
            return lease

    def _take_row(
        self, connection: sqlite3.Connection, name: str, now: int
    ) -> tuple[int, int] | None:
        row = connection.execute(self._current, (name,)).fetchone()
        if row is not None and row[1] > now:
            return None
        generation = (row[0] if row is not None else 0) + 1
        expires_at = now + self._ttl_ms()
        connection.execute(self._take, (name, generation, self.holder, now, expires_at))
        return generation, expires_at

    def _release(self, lease: SQLiteLease) -> None:
        with self._lock:
            if self._held.get(lease.name) is lease:
                del self._held[lease.name]
                self._wake.notify()  # the heartbeat ends when nothing is held
            try:
                self._run(
                    lambda c, _: c.execute(
                        self._release_sql, (lease.name, self.holder, lease.generation)
                    ),
                    self.busy_timeout,
                )
            except StoreUnavailable as exc:
                logger.warning(
                    "could not release a SQLite lease; it frees its name once it expires",
                    extra={"lease": lease.name, "reason": str(exc)},
                )
            finally:
                self._close_when_idle()

    def _beat(self) -> None:
        """Renew every held lease each ``ttl / 3`` seconds, until none is held."""
        due = time.monotonic() + self.ttl / 3
        with self._lock:
            try:
                while self._held:
                    self._wake.wait(max(0.0, due - time.monotonic()))
                    if not self._held or time.monotonic() < due:
                        continue
                    renewed = self._renew_all()
                    due = time.monotonic() + self.ttl / (3 if renewed else 10)
            finally:
                self._heartbeat = None
                self._close_when_idle()

    def _renew_all(self) -> bool:
        """Renew the held leases in one transaction; return whether it committed."""
        for name, lease in list(self._held.items()):
            if not lease._held():
                del self._held[name]  # lost: nothing renews it again
        leases = list(self._held.values())
        if not leases:
            return True
        began = time.monotonic()
        left = min(lease._deadline for lease in leases) - began
        try:
            expires_at, kept = self._run(
                lambda c, now: self._renew_rows(c, leases, now),
                min(self.busy_timeout, max(0.0, left)),
            )
        except (StoreUnavailable, SchemaNotMigrated) as exc:
            logger.warning(
                "could not renew SQLite leases; trying again",
                extra={"leases": [lease.name for lease in leases], "reason": str(exc)},
            )
            return False
        for lease in leases:
            if lease in kept:
                lease._renewed(expires_at, began + self.ttl)
            else:
                lease._lost = True
                del self._held[lease.name]
                logger.warning(
                    "a SQLite lease expired before it was renewed",
                    extra={"lease": lease.name, "generation": lease.generation},
                )
        return True

    def _renew_rows(
        self, connection: sqlite3.Connection, leases: list[SQLiteLease], now: int
    ) -> tuple[int, list[SQLiteLease]]:
        expires_at = now + self._ttl_ms()
        kept = [
            lease
            for lease in leases
            if connection.execute(
                self._renew, (expires_at, lease.name, self.holder, lease.generation, now)
            ).rowcount
            == 1
        ]
        return expires_at, kept

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    # -- the connection ----------------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection, int], _R], busy_timeout: float) -> _R:
        """Run ``fn(connection, now_ms)`` in one write transaction; hold ``_lock``.

        ``now_ms`` is read once the transaction holds the write lock, so no
        other writer's time can come between it and the commit.
        """
        try:
            connection = self._connection
            if connection is None:
                connection = self._connection = self._connect()
            connection.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = fn(connection, _wall_ms())
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # A fresh connection next time: this one may be broken.
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()
            raise self._translate(exc) from exc
        return result

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: a lease store never creates the file (the event store does).
        connection = sqlite3.connect(
            f"file:{quote(self.path)}?mode=rw",
            uri=True,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # used by the heartbeat and anyio's threads, under _lock
        )
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _close_when_idle(self) -> None:
        if not self._held and self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def _translate(self, error: sqlite3.Error) -> Exception:
        if "no such table" in str(error):
            return SchemaNotMigrated(self.path, self._version(), SCHEMA_VERSION)
        name: str = getattr(error, "sqlite_errorname", type(error).__name__)
        reason = f"{error} ({name}) on {self.path}"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            reason += "; another connection held the database's write lock too long for a lease"
        return StoreUnavailable("sqlite", reason)

    def _version(self) -> int:
        try:
            connection = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True)
            try:
                return self._schema.version(connection)
            finally:
                connection.close()
        except sqlite3.Error:
            return 0

    def __repr__(self) -> str:
        return f"<SQLiteLeaseStore {self.path!r} holder {self.holder!r}, ttl {self.ttl}s>"
