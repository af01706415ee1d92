"""Idempotency keys in a PostgreSQL table, shared by every process of a service.

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``: of two
concurrent claims of a key, PostgreSQL lets exactly one insert (or take over
an expired row); the other finds the row and reports it. Times are the
database's clock, so the processes' clocks need not agree.
"""

# ruff: noqa: S608 - the schema and table names are validated and quoted; values are parameters

from __future__ import annotations

import time
from typing import Any, NamedTuple, Self

import psycopg_pool

from uno.cqrs._pools import CONNECT_ERRORS, check_pool_sizes, open_autocommit_pool
from uno.cqrs.exceptions import BusConfigurationError, IdempotencyStoreUnavailable
from uno.cqrs.idempotency._sqlite import check_table_name
from uno.cqrs.idempotency._store import Claim

__all__ = ["PostgresIdempotencyStore"]


class _Outcome(NamedTuple):
    rows: list[tuple[Any, ...]]
    rowcount: int


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresIdempotencyStore:
    """A store in PostgreSQL (its schema and table are created when missing).

    Args:
        pool: An open ``psycopg_pool.AsyncConnectionPool`` of autocommit
            connections (``from_url`` makes one and owns it).
        schema: The schema of the table.
        table: The table's name.
        purge_every: Expired keys are swept on a claim at most this often (seconds).
    """

    backend = "postgresql"

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        table: str = "uno_idempotency_keys",
        owns_pool: bool = False,
        purge_every: float = 60.0,
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        self.schema = check_table_name(schema)
        self.table = check_table_name(table)
        self._qualified = f"{_ident(self.schema)}.{_ident(self.table)}"
        self._purge_every = purge_every
        self._last_purge = 0.0

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        **options: Any,
    ) -> Self:
        """Open a store with a new pool for a ``postgresql://`` URL and create its table.

        Raises:
            IdempotencyStoreUnavailable: the database cannot be reached.
        """
        problem = check_pool_sizes(pool_min_size, pool_max_size)
        if problem is not None:
            raise BusConfigurationError(problem)
        try:
            pool = await open_autocommit_pool(
                url,
                min_size=pool_min_size,
                max_size=pool_max_size,
                connect_timeout=connect_timeout,
                name="uno.cqrs.idempotency",
            )
        except CONNECT_ERRORS as exc:
            raise IdempotencyStoreUnavailable("postgresql", f"{type(exc).__name__}: {exc}") from exc
        store = cls(pool, owns_pool=True, **options)
        try:
            await store.open()
        except BaseException:
            await pool.close()
            raise
        return store

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _execute(self, statement: str, params: tuple[Any, ...] = ()) -> _Outcome:
        """Run one statement on a pooled autocommit connection: its rows and row count."""
        try:
            async with self._pool.connection() as conn, conn.cursor() as cursor:
                await cursor.execute(statement.encode(), params)
                rows = await cursor.fetchall() if cursor.description is not None else []
                return _Outcome(rows, cursor.rowcount)
        except CONNECT_ERRORS as exc:
            raise IdempotencyStoreUnavailable("postgresql", f"{type(exc).__name__}: {exc}") from exc

    async def open(self) -> None:
        """Create the schema, table and index when missing."""
        await self._execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(self.schema)}")
        await self._execute(
            f"CREATE TABLE IF NOT EXISTS {self._qualified} (key text PRIMARY KEY, "
            "fingerprint text NOT NULL, token text NOT NULL, result bytea, "
            "expires_at timestamptz NOT NULL)"
        )
        await self._execute(
            f"CREATE INDEX IF NOT EXISTS {_ident(self.table + '_expires')} "
            f"ON {self._qualified} (expires_at)"
        )

    async def claim(self, key: str, fingerprint: str, token: str, lease: float) -> Claim:
        await self._maybe_purge()
        while True:
            taken = await self._execute(
                f"INSERT INTO {self._qualified} AS k (key, fingerprint, token, result, expires_at) "
                "VALUES (%s, %s, %s, NULL, clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                "token = EXCLUDED.token, result = NULL, expires_at = EXCLUDED.expires_at "
                "WHERE k.expires_at <= clock_timestamp() RETURNING 1",
                (key, fingerprint, token, lease),
            )
            if taken.rows:
                return Claim("claimed", fingerprint, token)
            found = await self._execute(
                f"SELECT fingerprint, result FROM {self._qualified} "
                "WHERE key = %s AND expires_at > clock_timestamp()",
                (key,),
            )
            if found.rows:  # else it was released or expired in between: claim again
                fingerprint_held, result = found.rows[0]
                if result is None:
                    return Claim("pending", fingerprint_held)
                return Claim("done", fingerprint_held, result=bytes(result))

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge >= self._purge_every:
            self._last_purge = now
            await self.purge()

    async def renew(self, key: str, token: str, lease: float) -> bool:
        renewed = await self._execute(
            f"UPDATE {self._qualified} SET expires_at = clock_timestamp() + "
            "make_interval(secs => %s) WHERE key = %s AND token = %s AND result IS NULL",
            (lease, key, token),
        )
        return renewed.rowcount == 1

    async def complete(self, key: str, token: str, result: bytes, retention: float) -> bool:
        completed = await self._execute(
            f"UPDATE {self._qualified} SET result = %s, expires_at = clock_timestamp() + "
            "make_interval(secs => %s) WHERE key = %s AND token = %s AND result IS NULL",
            (result, retention, key, token),
        )
        return completed.rowcount == 1

    async def release(self, key: str, token: str) -> None:
        await self._execute(
            f"DELETE FROM {self._qualified} WHERE key = %s AND token = %s AND result IS NULL",
            (key, token),
        )

    async def purge(self) -> int:
        purged = await self._execute(
            f"DELETE FROM {self._qualified} WHERE expires_at <= clock_timestamp()"
        )
        return purged.rowcount

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()
