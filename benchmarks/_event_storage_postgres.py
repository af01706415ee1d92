"""The event store benchmark's PostgreSQL peers: eventsourcing's recorder and raw psycopg.

Everything lives in a schema made for the run (``uno_bench_<random>``) and
dropped afterwards. uno's own side is ``UnoContender`` on a ``postgresql://`` URL.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from benchmarks._event_storage_common import (
    EVENTSOURCING_TOPIC,
    PAGE,
    WRITERS,
    ItemAdded,
    Workload,
    single_appends,
)
from uno.events import uuid7

__all__ = [
    "AsyncRawPostgres",
    "EventsourcingPostgres",
    "RawPostgres",
    "analyze",
    "fresh_schema",
    "server_version",
]

_COPY_TYPES = ["text", "int4", "uuid", "text", "int4", "bytea", "bytea"]
# The table uno's migration creates, with the same keys, written by hand:
# the position comes from an identity column instead of uno's ordering scheme.
_CREATE = sql.SQL("""
CREATE TABLE {table} (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL,
    stream_version integer NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    event_version integer NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, stream_version)
)""")
_INSERT_ONE = sql.SQL(
    "INSERT INTO {table} (stream_id, stream_version, event_id, event_type, event_version, "
    "data, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
# %b: psycopg sends the arrays in binary; with %s it would dump them as text,
# escaping every bytea, which costs about 6 µs per event.
_INSERT_UNNEST = sql.SQL(
    "INSERT INTO {table} (stream_id, stream_version, event_id, event_type, event_version, "
    "data, metadata) SELECT %b, v, i, t, tv, d, m "
    "FROM unnest(%b::integer[], %b::uuid[], %b::text[], %b::integer[], %b::bytea[], "
    "%b::bytea[]) AS u(v, i, t, tv, d, m)"
)
_COPY = sql.SQL(
    "COPY {table} (stream_id, stream_version, event_id, event_type, event_version, "
    "data, metadata) FROM STDIN (FORMAT BINARY)"
)
_READ_STREAM = sql.SQL(
    "SELECT position, stream_id, stream_version, event_id, event_type, event_version, data, "
    "metadata, recorded_at FROM {table} WHERE stream_id = %s ORDER BY stream_version"
)
_READ_PAGE = sql.SQL(
    "SELECT position, stream_id, stream_version, event_id, event_type, event_version, data, "
    "metadata, recorded_at FROM {table} WHERE position > %s ORDER BY position LIMIT %s"
)


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """Create a schema of a random name, yield its name, and drop it with its contents."""
    schema = f"uno_bench_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield schema
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def analyze(url: str, schema: str) -> None:
    """Gather planner statistics on every table of ``schema``, as autovacuum would soon."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema]
        ).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))


def server_version(url: str) -> str:
    """Return the PostgreSQL server's version string, such as ``"15.20"``."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "unknown"


class EventsourcingPostgres:
    """eventsourcing's ``PostgresApplicationRecorder`` with its defaults.

    Its insert locks the events table (``LOCK TABLE ... IN EXCLUSIVE MODE``) so
    that notification ids follow commit order, and sends ``NOTIFY``. The only
    setting changed is the pool: it may grow from its one connection to
    ``WRITERS`` (``max_overflow``), so that concurrent writers are not queued by
    the pool before the table lock. Events go in as ``StoredEvent``s whose
    state is the pre-encoded JSON.
    """

    def __init__(
        self, url: str, schema: str, workload: Workload, threads: ThreadPoolExecutor
    ) -> None:
        params = conninfo_to_dict(url)
        self._datastore = PostgresDatastore(
            dbname=str(params.get("dbname", "postgres")),
            host=str(params.get("host", "localhost")),
            port=str(params.get("port", "5432")),
            user=str(params.get("user", "postgres")),
            password=str(params.get("password", "")),
            schema=schema,
            max_overflow=WRITERS - 1,
        )
        self._recorder = PostgresApplicationRecorder(
            self._datastore, events_table_name="es_stored_events"
        )
        self._recorder.create_table()
        self._payloads = workload.payloads
        self._threads = threads

    def close(self) -> None:
        """Close the connection pool."""
        self._datastore.close()

    def seed(self, streams: Sequence[UUID], length: int) -> None:
        """Insert ``length`` events into each new stream, one call per stream."""
        for stream in streams:
            self._recorder.insert_events(self._stored(stream, 1, length))

    def append_singles(self, count: int) -> None:
        """Insert ``count`` single events."""
        insert, payloads = self._recorder.insert_events, self._payloads
        for n, (stream, version) in enumerate(single_appends(count)):
            insert([StoredEvent(stream, version, EVENTSOURCING_TOPIC, payloads[n % len(payloads)])])

    def append_batches(self, count: int, size: int) -> None:
        """Insert ``count`` batches of ``size`` events, each into a new stream."""
        for _ in range(count):
            self._recorder.insert_events(self._stored(uuid4(), 1, size))

    def append_concurrently(self, writers: int, batches: int, size: int) -> None:
        """Insert from ``writers`` threads at once, each into its own stream."""

        def writer(_: int) -> None:
            stream = uuid4()
            for n in range(batches):
                self._recorder.insert_events(self._stored(stream, n * size + 1, size))

        list(self._threads.map(writer, range(writers)))

    def read_stream(self, stream: UUID, times: int) -> int:
        """Select the stream's events ``times`` times; return the events read."""
        return sum(len(self._recorder.select_events(stream)) for _ in range(times))

    def read_all(self) -> int:
        """Select every notification, ``PAGE`` at a time; return the events read."""
        count, start = 0, 1
        while True:
            page = self._recorder.select_notifications(start=start, limit=PAGE)
            count += len(page)
            if len(page) < PAGE:
                return count
            start = page[-1].id + 1

    def _stored(self, stream: UUID, first_version: int, size: int) -> list[StoredEvent]:
        payloads = self._payloads
        return [
            StoredEvent(stream, first_version + i, EVENTSOURCING_TOPIC, payloads[i % len(payloads)])
            for i in range(size)
        ]


class _RawStatements:
    """The hand-written SQL, rendered once for one table."""

    def __init__(self, schema: str, table: str) -> None:
        def render(statement: sql.SQL) -> str:
            return statement.format(table=sql.Identifier(schema, table)).as_string()

        self.create = render(_CREATE)
        self.insert_one = render(_INSERT_ONE)
        self.insert_unnest = render(_INSERT_UNNEST)
        self.copy = render(_COPY)
        self.read_stream = render(_READ_STREAM)
        self.read_page = render(_READ_PAGE)


def _one_row(workload: Workload, n: int, stream: UUID, version: int) -> tuple[Any, ...]:
    payload = workload.payloads[n % len(workload.payloads)]
    return (str(stream), version, uuid7(), ItemAdded.event_type, 1, payload, b"")


def _unnest_params(workload: Workload, stream: str, first: int, size: int) -> list[Any]:
    return [
        stream,
        list(range(first, first + size)),
        [uuid7() for _ in range(size)],
        [ItemAdded.event_type] * size,
        [1] * size,
        list(workload.payloads[:size]),
        [b""] * size,
    ]


def _copy_rows(workload: Workload, stream: str, size: int) -> Iterator[tuple[Any, ...]]:
    for i in range(size):
        yield (stream, i + 1, uuid7(), ItemAdded.event_type, 1, workload.payloads[i], b"")


class RawPostgres:
    """Hand-written blocking psycopg on a table like uno's: the floor, sync flavour.

    One connection per concurrent writer, in autocommit mode: every statement
    is its own transaction. Concurrent writers are threads.
    """

    table = "raw_events"

    def __init__(
        self, url: str, schema: str, workload: Workload, threads: ThreadPoolExecutor
    ) -> None:
        self._sql = _RawStatements(schema, self.table)
        self._workload = workload
        self._threads = threads
        self._connections: list[psycopg.Connection[TupleRow]] = [
            psycopg.connect(url, autocommit=True) for _ in range(WRITERS)
        ]

    def create_table(self) -> None:
        """Create the table (once, for this and the async flavour)."""
        self._connections[0].execute(self._sql.create)

    def close(self) -> None:
        """Close the connections."""
        for conn in self._connections:
            conn.close()

    def seed(self, streams: Sequence[UUID], length: int) -> None:
        """COPY ``length`` events into each new stream."""
        for stream in streams:
            self.append_copy(1, length, stream)

    def append_singles(self, count: int) -> None:
        """INSERT ``count`` single events, one statement each."""
        conn, statement, workload = self._connections[0], self._sql.insert_one, self._workload
        for n, (stream, version) in enumerate(single_appends(count)):
            conn.execute(statement, _one_row(workload, n, stream, version))

    def append_batches(self, count: int, size: int) -> None:
        """INSERT ``count`` batches from ``unnest`` of arrays, each into a new stream."""
        conn, statement, workload = self._connections[0], self._sql.insert_unnest, self._workload
        for _ in range(count):
            conn.execute(statement, _unnest_params(workload, str(uuid4()), 1, size))

    def append_copy(self, count: int, size: int, stream: UUID | None = None) -> None:
        """COPY (binary) ``count`` batches, each into a new stream (or into ``stream``)."""
        conn = self._connections[0]
        for _ in range(count):
            with conn.cursor() as cursor, cursor.copy(self._sql.copy) as copy:
                copy.set_types(_COPY_TYPES)
                for row in _copy_rows(self._workload, str(stream or uuid4()), size):
                    copy.write_row(row)

    def append_concurrently(self, writers: int, batches: int, size: int) -> None:
        """INSERT ... unnest from ``writers`` threads, each on its connection and stream."""
        statement, workload = self._sql.insert_unnest, self._workload

        def writer(index: int) -> None:
            conn, stream = self._connections[index], str(uuid4())
            for n in range(batches):
                conn.execute(statement, _unnest_params(workload, stream, n * size + 1, size))

        list(self._threads.map(writer, range(writers)))

    def read_stream(self, stream: UUID, times: int) -> int:
        """Select the stream's rows ``times`` times (binary results); return the rows read."""
        conn, statement, key = self._connections[0], self._sql.read_stream, str(stream)
        return sum(
            len(conn.execute(statement, [key], binary=True).fetchall()) for _ in range(times)
        )

    def read_all(self) -> int:
        """Select every row in pages of ``PAGE`` by position; return the rows read."""
        conn, statement = self._connections[0], self._sql.read_page
        count, after = 0, 0
        while True:
            rows = conn.execute(statement, [after, PAGE], binary=True).fetchall()
            count += len(rows)
            if len(rows) < PAGE:
                return count
            after = rows[-1][0]


class AsyncRawPostgres:
    """The same hand-written SQL on psycopg's ``AsyncConnection``; writers are tasks."""

    def __init__(self, runner: asyncio.Runner, url: str, schema: str, workload: Workload) -> None:
        self._runner = runner
        self._sql = _RawStatements(schema, RawPostgres.table)
        self._workload = workload
        self._connections: list[psycopg.AsyncConnection[TupleRow]] = [
            runner.run(psycopg.AsyncConnection.connect(url, autocommit=True))
            for _ in range(WRITERS)
        ]

    def close(self) -> None:
        """Close the connections."""
        for conn in self._connections:
            self._runner.run(conn.close())

    def append_singles(self, count: int) -> None:
        """INSERT ``count`` single events, one statement each."""
        self._runner.run(self._singles(count))

    def append_batches(self, count: int, size: int) -> None:
        """INSERT ``count`` batches from ``unnest`` of arrays, each into a new stream."""
        self._runner.run(self._batches(count, size))

    def append_copy(self, count: int, size: int) -> None:
        """COPY (binary) ``count`` batches, each into a new stream."""
        self._runner.run(self._copy(count, size))

    def append_concurrently(self, writers: int, batches: int, size: int) -> None:
        """INSERT ... unnest from ``writers`` tasks, each on its connection and stream."""
        self._runner.run(self._concurrently(writers, batches, size))

    def read_stream(self, stream: UUID, times: int) -> int:
        """Select the stream's rows ``times`` times (binary results); return the rows read."""
        return self._runner.run(self._read_stream(str(stream), times))

    def read_all(self) -> int:
        """Select every row in pages of ``PAGE`` by position; return the rows read."""
        return self._runner.run(self._read_all())

    async def _singles(self, count: int) -> None:
        conn, statement, workload = self._connections[0], self._sql.insert_one, self._workload
        for n, (stream, version) in enumerate(single_appends(count)):
            await conn.execute(statement, _one_row(workload, n, stream, version))

    async def _batches(self, count: int, size: int) -> None:
        conn, statement, workload = self._connections[0], self._sql.insert_unnest, self._workload
        for _ in range(count):
            await conn.execute(statement, _unnest_params(workload, str(uuid4()), 1, size))

    async def _copy(self, count: int, size: int) -> None:
        conn = self._connections[0]
        for _ in range(count):
            async with conn.cursor() as cursor, cursor.copy(self._sql.copy) as copy:
                copy.set_types(_COPY_TYPES)
                for row in _copy_rows(self._workload, str(uuid4()), size):
                    await copy.write_row(row)

    async def _concurrently(self, writers: int, batches: int, size: int) -> None:
        statement, workload = self._sql.insert_unnest, self._workload

        async def writer(conn: psycopg.AsyncConnection[TupleRow]) -> None:
            stream = str(uuid4())
            for n in range(batches):
                await conn.execute(statement, _unnest_params(workload, stream, n * size + 1, size))

        await asyncio.gather(*(writer(conn) for conn in self._connections[:writers]))

    async def _read_stream(self, stream: str, times: int) -> int:
        conn, statement = self._connections[0], self._sql.read_stream
        count = 0
        for _ in range(times):
            cursor = await conn.execute(statement, [stream], binary=True)
            count += len(await cursor.fetchall())
        return count

    async def _read_all(self) -> int:
        conn, statement = self._connections[0], self._sql.read_page
        count, after = 0, 0
        while True:
            cursor = await conn.execute(statement, [after, PAGE], binary=True)
            rows = await cursor.fetchall()
            count += len(rows)
            if len(rows) < PAGE:
                return count
            after = rows[-1][0]
