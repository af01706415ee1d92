"""Idempotency keys in a SQLite table, shared by every process that opens the file.

Each call is one ``BEGIN IMMEDIATE`` transaction on the store's connection,
run in a worker thread; SQLite's write lock makes a claim atomic between
processes too. Times are the wall clock (``time.time``) of the process.
"""

# ruff: noqa: S608 - the table name is validated; values are parameters

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread

from uno.cqrs.exceptions import BusConfigurationError, IdempotencyStoreUnavailable
from uno.cqrs.idempotency._store import Claim

__all__ = ["SQLiteIdempotencyStore"]

T = TypeVar("T")


def check_table_name(table: str) -> str:
    """Return ``table`` if it is a plain SQL name (letters, digits, ``_``), else raise."""
    if not table or not table.replace("_", "").isalnum() or not table.isascii():
        raise BusConfigurationError(
            f"the idempotency table name must hold only ASCII letters, digits and "
            f"underscores, got {table!r}"
        )
    return table


class SQLiteIdempotencyStore:
    """A store in a SQLite database file (created with its table when missing).

    Args:
        path: The database file; the read models' or the event store's file
            will do.
        table: The table's name.
        busy_timeout: Seconds a call waits for another connection's lock.
        purge_every: Expired keys are swept on a claim at most this often (seconds).
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        table: str = "uno_idempotency_keys",
        busy_timeout: float = 5.0,
        purge_every: float = 60.0,
    ) -> None:
        self.path = path
        self.table = check_table_name(table)
        self._busy_timeout = busy_timeout
        self._purge_every = purge_every
        self._purged_at = 0.0
        self._conn: sqlite3.Connection | None = None
        self._thread_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Make a store for ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
        parts = urlsplit(url)
        path = unquote(parts.path[1:])
        if parts.scheme.lower() != "sqlite" or parts.netloc or not path or path == ":memory:":
            raise BusConfigurationError(
                "a SQLite idempotency store's URL is 'sqlite:///relative/path.db' or "
                f"'sqlite:////absolute/path.db', got {url!r}"
            )
        return cls(path, **options)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and create the table if it is missing."""
        await self._run(lambda conn: None)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY NOT NULL, "
                "fingerprint TEXT NOT NULL, token TEXT NOT NULL, result BLOB, "
                "expires_at REAL NOT NULL)"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_expires ON {self.table} (expires_at)"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _locked(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._thread_lock:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = work(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return value

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(self._locked, work, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise IdempotencyStoreUnavailable(
                "sqlite", f"{type(exc).__name__}: {exc} ({self.path})"
            ) from exc

    async def claim(self, key: str, fingerprint: str, token: str, lease: float) -> Claim:
        def work(conn: sqlite3.Connection) -> Claim:
            now = time.time()
            if now - self._purged_at >= self._purge_every:
                conn.execute(f"DELETE FROM {self.table} WHERE expires_at <= ?", (now,))
                self._purged_at = now
            row = conn.execute(
                f"SELECT fingerprint, result, expires_at FROM {self.table} WHERE key = ?", (key,)
            ).fetchone()
            if row is None or row[2] <= now:
                conn.execute(
                    f"INSERT OR REPLACE INTO {self.table} (key, fingerprint, token, result, "
                    "expires_at) VALUES (?, ?, ?, NULL, ?)",
                    (key, fingerprint, token, now + lease),
                )
                return Claim("claimed", fingerprint, token)
            if row[1] is None:
                return Claim("pending", row[0])
            return Claim("done", row[0], result=bytes(row[1]))

        return await self._run(work)

    async def renew(self, key: str, token: str, lease: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            done = conn.execute(
                f"UPDATE {self.table} SET expires_at = ? WHERE key = ? AND token = ? "
                "AND result IS NULL",
                (time.time() + lease, key, token),
            )
            return done.rowcount == 1

        return await self._run(work)

    async def complete(self, key: str, token: str, result: bytes, retention: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            done = conn.execute(
                f"UPDATE {self.table} SET result = ?, expires_at = ? WHERE key = ? "
                "AND token = ? AND result IS NULL",
                (result, time.time() + retention, key, token),
            )
            return done.rowcount == 1

        return await self._run(work)

    async def release(self, key: str, token: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"DELETE FROM {self.table} WHERE key = ? AND token = ? AND result IS NULL",
                (key, token),
            )
        )

    async def purge(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            now = time.time()
            self._purged_at = now
            return conn.execute(f"DELETE FROM {self.table} WHERE expires_at <= ?", (now,)).rowcount

        return await self._run(work)

    async def close(self) -> None:
        with self._thread_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
