"""A read model in a PostgreSQL table: id, version and the document as JSONB.

Each write is one transaction on a connection of the pool (autocommit
connections, ``conn.transaction()`` per write); ``within(tx)`` runs inside
someone else's transaction, each write behind a savepoint so that a refused
write (a duplicate, a stale version) leaves that transaction usable.
"""

# ruff: noqa: S608 - SQL is built from validated table names and field paths; values are parameters

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, Self, TypeVar

import psycopg
import psycopg_pool
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.pq import TransactionStatus

from uno.cqrs._pools import check_pool_sizes, open_autocommit_pool
from uno.cqrs.exceptions import (
    DocumentNotFound,
    DuplicateDocument,
    InvalidDocument,
    ReadModelConfigurationError,
    ReadModelNotMigrated,
    ReadModelUnavailable,
    StaleDocumentVersion,
)
from uno.cqrs.read_models._query import QueryPlan, Row
from uno.cqrs.read_models._repository import RepositoryBase
from uno.cqrs.read_models._specifications import Specification
from uno.cqrs.read_models._sql import PostgresDialect
from uno.cqrs.read_models._statements import TableStatements
from uno.cqrs.read_models._transactions import PostgresTransactionScope

__all__ = ["MIGRATIONS", "PostgresRepository"]

D = TypeVar("D")

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "create the documents table",
        "CREATE TABLE {table} (id {id_type} PRIMARY KEY, version bigint NOT NULL, "
        "doc jsonb NOT NULL)",
    ),
)
"""Versioned migrations of a read model's table: ``(version, description, SQL template)``."""

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout, OSError)


def _ident(*parts: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


class PostgresRepository(RepositoryBase[D]):
    """A repository in PostgreSQL (13 or newer).

    Args:
        model: The document class.
        pool: An open ``psycopg_pool.AsyncConnectionPool`` of autocommit
            connections (``from_url`` makes one).
        schema: The PostgreSQL schema of the tables.
        table_prefix: Prefix of the tables (``rm_`` by default).
        owns_pool: Close the pool when the repository closes.
        **options: Those of ``RepositoryBase``.
    """

    backend = "postgresql"

    def __init__(
        self,
        model: type[D],
        *,
        pool: psycopg_pool.AsyncConnectionPool[Any] | None,
        schema: str = "public",
        table_prefix: str = "rm_",
        owns_pool: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        given: object = schema
        if not isinstance(given, str) or not given or "\x00" in given:
            raise ReadModelConfigurationError(f"schema must be a non-empty name, got {schema!r}")
        if table_prefix and not table_prefix.replace("_", "").isalnum():
            raise ReadModelConfigurationError(
                f"table_prefix must hold only letters, digits and underscores, got {table_prefix!r}"
            )
        if self.name == "read_model_migrations":
            raise ReadModelConfigurationError(
                "the read model name 'read_model_migrations' is taken"
            )
        self.schema = schema
        self.table = _ident(schema, table_prefix + self.name)
        self._migrations = _ident(schema, table_prefix + "read_model_migrations")
        self._prefix = table_prefix
        self._sql = TableStatements(self.table, PostgresDialect(), self.document)  # type: ignore[arg-type]
        self._pool = pool
        self._owns_pool = owns_pool
        self._bound: AsyncConnection[Any] | None = None
        self._ids = "bigint[]" if self.document.id_kind == "int" else "text[]"

    @classmethod
    async def from_url(
        cls,
        url: str,
        model: type[D],
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        auto_migrate: bool = False,
        **options: Any,
    ) -> Self:
        """Open a repository with a new connection pool for a ``postgresql://`` URL.

        Raises:
            ReadModelUnavailable: the database cannot be reached within ``connect_timeout``.
            ReadModelNotMigrated: the table is missing or old and ``auto_migrate`` is off.
        """
        problem = check_pool_sizes(pool_min_size, pool_max_size)
        if problem is not None:
            raise ReadModelConfigurationError(problem)
        try:
            pool = await open_autocommit_pool(
                url,
                min_size=pool_min_size,
                max_size=pool_max_size,
                connect_timeout=connect_timeout,
                name="uno.cqrs.read_models",
            )
        except _UNAVAILABLE as exc:
            raise ReadModelUnavailable("postgresql", f"{type(exc).__name__}: {exc}") from exc
        repository = cls(model, pool=pool, owns_pool=True, **options)
        return await repository._made_ready(auto_migrate=auto_migrate)

    def within(self, tx: PostgresTransactionScope | AsyncConnection[Any]) -> PostgresRepository[D]:
        """Return this repository working inside ``tx``'s transaction.

        ``tx`` is the bound store of the event store's ``transaction()`` (it
        has a ``connection``) or a psycopg ``AsyncConnection`` with an open
        transaction. The repository never commits; it tells no ``changes``
        listeners (the commit is not its own).
        """
        connection = tx if isinstance(tx, AsyncConnection) else getattr(tx, "connection", None)
        if not isinstance(connection, AsyncConnection):
            raise ReadModelConfigurationError(
                f"{type(tx).__qualname__} has no psycopg AsyncConnection: pass the store that "
                "store.transaction() yields, or an AsyncConnection"
            )
        if connection.info.transaction_status == TransactionStatus.IDLE:
            raise ReadModelConfigurationError(
                "within() needs a connection inside an open transaction (conn.transaction() "
                "or store.transaction()); this one has none, so nothing would commit together"
            )
        bound = copy.copy(self)
        bound._bound = connection
        bound._owns_pool = False
        bound._changes = None
        return bound

    # -- connections -----------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.UndefinedTable as exc:
            raise ReadModelNotMigrated(self.name, 0, MIGRATIONS[-1][0]) from exc
        except psycopg.errors.ProgramLimitExceeded as exc:
            raise InvalidDocument(
                f"PostgreSQL cannot store this document: {exc}. A B-tree index (Index(field)) "
                "holds values of at most about 2,700 bytes: drop the index of a field that "
                "holds long text, or shorten the value"
            ) from exc
        except (psycopg.Error, *_UNAVAILABLE) as exc:
            raise ReadModelUnavailable("postgresql", f"{type(exc).__name__}: {exc}") from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncCursor[Any]]:
        """Lend a cursor inside a transaction (a savepoint when bound) that ends with the block."""
        with self._translated():
            if self._bound is not None:
                async with self._bound.transaction(), self._bound.cursor() as cursor:
                    yield cursor
                return
            async with self._pool_connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield cursor

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncCursor[Any]]:
        with self._translated():
            if self._bound is not None:
                async with self._bound.cursor() as cursor:
                    yield cursor
                return
            async with self._pool_connection() as conn, conn.cursor() as cursor:
                yield cursor

    @asynccontextmanager
    async def _pool_connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._pool is None or self._pool.closed:
            raise ReadModelConfigurationError(f"the repository of {self.name!r} is closed")
        async with self._pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        """Close the pool if the repository opened it."""
        if self._bound is None and self._owns_pool and self._pool is not None:
            await self._pool.close()

    # -- schema ----------------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the table and the declared indexes; safe from several processes."""
        id_type = "bigint" if self.document.id_kind == "int" else 'text COLLATE "C"'
        async with self._writing() as cur:
            await cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"uno.cqrs.read_models:{self.schema}"],
            )
            await cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._migrations} (read_model text NOT NULL, "
                "version integer NOT NULL, description text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "PRIMARY KEY (read_model, version))"
            )
            await cur.execute(
                f"SELECT version FROM {self._migrations} WHERE read_model = %s", [self.name]
            )
            applied = {v for (v,) in await cur.fetchall()}
            for version, description, template in MIGRATIONS:
                if version in applied:
                    continue
                await cur.execute(template.format(table=self.table, id_type=id_type))
                await cur.execute(
                    f"INSERT INTO {self._migrations} (read_model, version, description) "
                    "VALUES (%s, %s, %s)",
                    [self.name, version, description],
                )
            for statement in self._sql.index_statements(self._prefix + "ix_"):
                await cur.execute(statement)

    async def schema_version(self) -> int:
        """Return the newest applied migration of this read model, 0 if none."""
        async with self._reading() as cur:
            await cur.execute("SELECT to_regclass(%s) IS NOT NULL", [self._migrations])
            row = await cur.fetchone()
            if row is None or not row[0]:
                return 0
            await cur.execute(
                f"SELECT coalesce(max(version), 0) FROM {self._migrations} WHERE read_model = %s",
                [self.name],
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def check_schema(self) -> None:
        """Raise ``ReadModelNotMigrated`` unless every migration is applied."""
        have, want = await self.schema_version(), MIGRATIONS[-1][0]
        if have < want:
            raise ReadModelNotMigrated(self.name, have, want)

    # -- documents ---------------------------------------------------------------------

    async def _load(self, keys: list[Any]) -> dict[Any, tuple[int, bytes | str]]:
        async with self._reading() as cur:
            await cur.execute(
                f"SELECT id, version, doc::text FROM {self.table} WHERE id = ANY(%s::{self._ids})",
                [keys],
            )
            return {key: (version, doc) for key, version, doc in await cur.fetchall()}

    async def _insert(self, key: Any, data: bytes) -> int:
        async with self._writing() as cur:
            await cur.execute(
                f"INSERT INTO {self.table} (id, version, doc) VALUES (%s, 1, %s::jsonb) "
                "ON CONFLICT (id) DO NOTHING RETURNING version",
                [key, data.decode()],
            )
            if await cur.fetchone() is None:
                raise DuplicateDocument(self.name, key)
        return 1

    async def _upsert(self, key: Any, data: bytes) -> int:
        async with self._writing() as cur:
            await cur.execute(
                f"INSERT INTO {self.table} AS t (id, version, doc) VALUES (%s, 1, %s::jsonb) "
                "ON CONFLICT (id) DO UPDATE SET version = t.version + 1, doc = excluded.doc "
                "RETURNING version",
                [key, data.decode()],
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def _update(self, key: Any, data: bytes, expected: int) -> int:
        async with self._writing() as cur:
            await cur.execute(
                f"UPDATE {self.table} SET version = version + 1, doc = %s::jsonb "
                "WHERE id = %s AND version = %s RETURNING version",
                [data.decode(), key, expected],
            )
            row = await cur.fetchone()
            if row is None:
                await self._refuse(cur, key, expected)
        return int(row[0])

    async def _delete(self, key: Any, expected: int | None) -> bool:
        async with self._writing() as cur:
            if expected is None:
                await cur.execute(f"DELETE FROM {self.table} WHERE id = %s", [key])
                return cur.rowcount > 0
            await cur.execute(
                f"DELETE FROM {self.table} WHERE id = %s AND version = %s", [key, expected]
            )
            if cur.rowcount == 0:
                await self._refuse(cur, key, expected)
        return True

    async def _refuse(self, cur: AsyncCursor[Any], key: Any, expected: int) -> NoReturn:
        await cur.execute(f"SELECT version FROM {self.table} WHERE id = %s", [key])
        found = await cur.fetchone()
        if found is None:
            raise DocumentNotFound(self.name, key)
        raise StaleDocumentVersion(self.name, key, expected, int(found[0]))

    async def _upsert_many(self, rows: list[tuple[Any, bytes]]) -> None:
        async with self._writing() as cur:
            await cur.execute(
                f"INSERT INTO {self.table} AS t (id, version, doc) "
                f"SELECT i, 1, d::jsonb FROM unnest(%s::{self._ids}, %s::text[]) AS u(i, d) "
                "ON CONFLICT (id) DO UPDATE SET version = t.version + 1, doc = excluded.doc",
                [[key for key, _ in rows], [data.decode() for _, data in rows]],
            )

    async def _clear(self) -> None:
        async with self._writing() as cur:
            await cur.execute(f"DELETE FROM {self.table}")

    async def _fetch(self, plan: QueryPlan) -> list[Row]:
        statement, params = self._sql.select(plan)
        async with self._reading() as cur:
            await cur.execute(statement, params)
            found = await cur.fetchall()
        if plan.paths is None:
            return [(row[0], row[1], row[2], ()) for row in found]
        return [(row[0], row[1], None, tuple(row[2:])) for row in found]

    async def _count(self, spec: Specification | None) -> int:
        statement, params = self._sql.count(spec)
        async with self._reading() as cur:
            await cur.execute(statement, params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0
