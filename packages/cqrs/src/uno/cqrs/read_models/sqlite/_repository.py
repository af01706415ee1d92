"""A read model in a SQLite table: id, version and the document as JSON text.

Writes run on one writer connection per repository, in a thread (anyio), each
in a ``BEGIN IMMEDIATE`` transaction; reads run on reader connections in WAL
mode, in parallel. ``within(tx)`` runs everything inside a transaction of
someone else (the event store's), through its ``run``.
"""

# ruff: noqa: S608 - SQL is built from validated table names and field paths; values are parameters

from __future__ import annotations

import contextlib
import copy
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import msgspec

from uno.cqrs.exceptions import (
    DocumentNotFound,
    DuplicateDocument,
    ReadModelConfigurationError,
    ReadModelError,
    ReadModelNotMigrated,
    ReadModelUnavailable,
    StaleDocumentVersion,
)
from uno.cqrs.read_models._query import QueryPlan, Row
from uno.cqrs.read_models._repository import RepositoryBase
from uno.cqrs.read_models._specifications import Specification
from uno.cqrs.read_models._sql import SQLiteDialect
from uno.cqrs.read_models._statements import TableStatements
from uno.cqrs.read_models._transactions import SQLiteTransactionScope

__all__ = ["MIGRATIONS", "SQLiteRepository"]

D = TypeVar("D")
T = TypeVar("T")

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "create the documents table",
        "CREATE TABLE {table} (id {id_type} PRIMARY KEY NOT NULL, "
        "version INTEGER NOT NULL, doc TEXT NOT NULL)",
    ),
)
"""Versioned migrations of a read model's table: ``(version, description, SQL template)``."""

_CHUNK = 500  # ids per statement, under SQLite's bound-parameter limit


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or parts.query or parts.fragment:
        raise ReadModelConfigurationError(
            "a SQLite read model's URL is 'sqlite:///relative/path.db' or "
            f"'sqlite:////absolute/path.db' (options are keyword arguments), got {url!r}"
        )
    path = unquote(parts.path[1:])
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ReadModelConfigurationError(
            f"{url!r} names no database file: use sqlite:///read.db, or memory:// for "
            "documents that live in the process"
        )
    return path


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteRepository(RepositoryBase[D]):
    """A repository in a SQLite database file.

    Args:
        path: The database file (created if missing). Share it with the event
            store's file to write documents in its transactions.
        model: The document class.
        table_prefix: Prefix of the tables (``rm_`` by default).
        busy_timeout: Seconds a write waits for another connection's lock.
        readers: Most reader connections at once.
        **options: Those of ``RepositoryBase``.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str,
        model: type[D],
        *,
        table_prefix: str = "rm_",
        busy_timeout: float = 5.0,
        readers: int = 4,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        if not table_prefix.replace("_", "").isalnum() and table_prefix:
            raise ReadModelConfigurationError(
                f"table_prefix must hold only letters, digits and underscores, got {table_prefix!r}"
            )
        if self.name == "read_model_migrations":
            raise ReadModelConfigurationError(
                "the read model name 'read_model_migrations' is taken"
            )
        self.path = path
        self.table = _quote(table_prefix + self.name)
        self._migrations = _quote(table_prefix + "read_model_migrations")
        self._prefix = table_prefix
        self._busy_timeout = busy_timeout
        self._sql = TableStatements(self.table, SQLiteDialect(), self.document)  # type: ignore[arg-type]
        self._writer_limiter = anyio.CapacityLimiter(1)
        self._reader_limiter = anyio.CapacityLimiter(readers)
        self._writer: sqlite3.Connection | None = None
        self._idle_readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._tx: SQLiteTransactionScope | None = None
        self._closed = False

    @classmethod
    async def from_url(
        cls, url: str, model: type[D], *, auto_migrate: bool = False, **options: Any
    ) -> Self:
        """Open a repository for ``sqlite:///path.db``; migrate it with ``auto_migrate``.

        Raises:
            ReadModelNotMigrated: the table is missing or old and ``auto_migrate`` is off.
        """
        return await cls(_path_of(url), model, **options)._made_ready(auto_migrate=auto_migrate)

    def within(self, tx: SQLiteTransactionScope) -> SQLiteRepository[D]:
        """Return this repository working inside ``tx`` (the event store's transaction).

        Its writes commit or roll back with ``tx``; it never commits. It tells
        no ``changes`` listeners (the commit is not its own).
        """
        if not isinstance(tx, SQLiteTransactionScope):
            raise ReadModelConfigurationError(
                f"{type(tx).__qualname__} has no async run(fn): pass a SQLite transaction, "
                "such as the one store.transaction() yields"
            )
        bound = copy.copy(self)
        bound._tx = tx
        bound._changes = None
        return bound

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        connection.execute("PRAGMA journal_mode = WAL")
        return connection

    def _translate(self, exc: sqlite3.Error) -> ReadModelError:
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return ReadModelNotMigrated(self.name, 0, MIGRATIONS[-1][0])
        return ReadModelUnavailable("sqlite", f"{type(exc).__name__}: {exc}")

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` atomically: in ``tx`` when bound, else in a transaction of its own."""
        if self._tx is not None:
            try:
                return await self._tx.run(fn)
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        self._check_open()

        def run() -> T:
            if self._writer is None:
                self._writer = self._connect()
            connection = self._writer
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = fn(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return result

        try:
            return await anyio.to_thread.run_sync(run, limiter=self._writer_limiter)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._tx is not None:
            try:
                return await self._tx.run(fn)
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        self._check_open()

        def run() -> T:
            with self._lock:
                connection = self._idle_readers.pop() if self._idle_readers else None
            if connection is None:
                connection = self._connect()
            try:
                return fn(connection)
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                with self._lock:
                    if self._closed:
                        connection.close()
                    else:
                        self._idle_readers.append(connection)

        try:
            return await anyio.to_thread.run_sync(run, limiter=self._reader_limiter)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise ReadModelConfigurationError(f"the repository of {self.name!r} is closed")

    async def close(self) -> None:
        """Close the connections (a repository from ``within`` closes nothing)."""
        if self._tx is not None or self._closed:
            return
        async with self._writer_limiter:
            with self._lock:
                self._closed = True
                connections = [*self._idle_readers, *([self._writer] if self._writer else [])]
                self._idle_readers.clear()
                self._writer = None
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    # -- schema ----------------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the table and create the declared indexes (idempotent)."""
        id_type = "INTEGER" if self.document.id_kind == "int" else "TEXT"
        name, table, migrations = self.name, self.table, self._migrations
        indexes = self._sql.index_statements(self._prefix + "ix_")

        def migrate(connection: sqlite3.Connection) -> None:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {migrations} (read_model TEXT NOT NULL, "
                "version INTEGER NOT NULL, description TEXT NOT NULL, applied_at TEXT NOT NULL, "
                "PRIMARY KEY (read_model, version))"
            )
            applied = {
                v
                for (v,) in connection.execute(
                    f"SELECT version FROM {migrations} WHERE read_model = ?", (name,)
                )
            }
            for version, description, template in MIGRATIONS:
                if version in applied:
                    continue
                connection.execute(template.format(table=table, id_type=id_type))
                connection.execute(
                    f"INSERT INTO {migrations} VALUES (?, ?, ?, ?)",
                    (
                        name,
                        version,
                        description,
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    ),
                )
            for statement in indexes:
                connection.execute(statement)

        await self._write(migrate)

    async def schema_version(self) -> int:
        """Return the newest applied migration of this read model, 0 if none."""
        name, migrations = self.name, self._migrations

        def version(connection: sqlite3.Connection) -> int:
            exists = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (migrations.strip('"').replace('""', '"'),),
            ).fetchone()
            if exists is None:
                return 0
            (found,) = connection.execute(
                f"SELECT coalesce(max(version), 0) FROM {migrations} WHERE read_model = ?",
                (name,),
            ).fetchone()
            return int(found)

        return await self._read(version)

    async def check_schema(self) -> None:
        """Raise ``ReadModelNotMigrated`` unless every migration is applied."""
        have, want = await self.schema_version(), MIGRATIONS[-1][0]
        if have < want:
            raise ReadModelNotMigrated(self.name, have, want)

    # -- documents ---------------------------------------------------------------------

    async def _load(self, keys: list[Any]) -> dict[Any, tuple[int, bytes | str]]:
        table = self.table

        def load(connection: sqlite3.Connection) -> dict[Any, tuple[int, bytes | str]]:
            found: dict[Any, tuple[int, bytes | str]] = {}
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                for key, version, doc in connection.execute(
                    f"SELECT id, version, doc FROM {table} WHERE id IN ({marks})", chunk
                ):
                    found[key] = (version, doc)
            return found

        return await self._read(load)

    async def _insert(self, key: Any, data: bytes) -> int:
        table, name, text = self.table, self.name, data.decode()

        def insert(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                f"INSERT INTO {table} (id, version, doc) VALUES (?, 1, ?) "
                "ON CONFLICT (id) DO NOTHING RETURNING version",
                (key, text),
            ).fetchone()
            if row is None:
                raise DuplicateDocument(name, key)
            return 1

        return await self._write(insert)

    async def _upsert(self, key: Any, data: bytes) -> int:
        table, text = self.table, data.decode()

        def upsert(connection: sqlite3.Connection) -> int:
            (version,) = connection.execute(
                f"INSERT INTO {table} AS t (id, version, doc) VALUES (?, 1, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = t.version + 1, doc = excluded.doc "
                "RETURNING version",
                (key, text),
            ).fetchone()
            return int(version)

        return await self._write(upsert)

    async def _update(self, key: Any, data: bytes, expected: int) -> int:
        table, name, text = self.table, self.name, data.decode()

        def update(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                f"UPDATE {table} SET version = version + 1, doc = ? "
                "WHERE id = ? AND version = ? RETURNING version",
                (text, key, expected),
            ).fetchone()
            if row is None:
                _refuse(connection, table, name, key, expected)
            return int(row[0])

        return await self._write(update)

    async def _delete(self, key: Any, expected: int | None) -> bool:
        table, name = self.table, self.name

        def delete(connection: sqlite3.Connection) -> bool:
            if expected is None:
                return connection.execute(f"DELETE FROM {table} WHERE id = ?", (key,)).rowcount > 0
            cursor = connection.execute(
                f"DELETE FROM {table} WHERE id = ? AND version = ?", (key, expected)
            )
            if cursor.rowcount == 0:
                _refuse(connection, table, name, key, expected)
            return True

        return await self._write(delete)

    async def _upsert_many(self, rows: list[tuple[Any, bytes]]) -> None:
        table = self.table
        values = [(key, data.decode()) for key, data in rows]

        def upsert_many(connection: sqlite3.Connection) -> None:
            connection.executemany(
                f"INSERT INTO {table} AS t (id, version, doc) VALUES (?, 1, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = t.version + 1, doc = excluded.doc",
                values,
            )

        await self._write(upsert_many)

    async def _clear(self) -> None:
        table = self.table
        await self._write(lambda c: c.execute(f"DELETE FROM {table}"))

    async def _fetch(self, plan: QueryPlan) -> list[Row]:
        sql, params = self._sql.select(plan)
        selected = plan.paths is not None
        decode = msgspec.json.decode

        def fetch(connection: sqlite3.Connection) -> list[Row]:
            rows: list[Row] = []
            for row in connection.execute(sql, params):
                if selected:
                    values = tuple(None if v is None else decode(v) for v in row[2:])
                    rows.append((row[0], row[1], None, values))
                else:
                    rows.append((row[0], row[1], row[2], ()))
            return rows

        return await self._read(fetch)

    async def _count(self, spec: Specification | None) -> int:
        sql, params = self._sql.count(spec)
        return await self._read(lambda c: int(c.execute(sql, params).fetchone()[0]))


def _refuse(connection: sqlite3.Connection, table: str, name: str, key: Any, expected: int) -> Any:
    """Raise why a versioned write found no row at ``expected``."""
    found = connection.execute(f"SELECT version FROM {table} WHERE id = ?", (key,)).fetchone()
    if found is None:
        raise DocumentNotFound(name, key)
    raise StaleDocumentVersion(name, key, expected, int(found[0]))
