"""The event store benchmark's SQLite peers: eventsourcing's recorder and raw ``sqlite3``.

Each contender has its own database file in a temporary directory, in WAL mode
with ``synchronous=NORMAL``, uno's default. uno's own side is ``UnoContender``
on a ``sqlite:///`` URL.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from pathlib import Path
from uuid import UUID, uuid4

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from benchmarks._event_storage_common import (
    EVENTSOURCING_TOPIC,
    ItemAdded,
    Workload,
    single_appends,
)
from uno.events import uuid7

__all__ = ["EventsourcingSQLite", "RawSQLite", "ThreadHandOff"]

_NORMAL = 1  # what PRAGMA synchronous reads for NORMAL

# The table uno's migrations create, with the same keys, written by hand: the
# position is SQLite's rowid, assigned on insert, and only ids a caller chose
# are in the unique index. These events have none, as uno's have not: their
# ids are uuid7s, marked as assigned, so no unique index holds them.
_CREATE = (
    """
CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    event_id BLOB NOT NULL,
    id_assigned INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    event_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    metadata BLOB NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (stream_id, stream_version)
)""",
    "CREATE UNIQUE INDEX events_chosen_id ON events (event_id) WHERE id_assigned = 0",
)
_INSERT = (
    "INSERT INTO events (stream_id, stream_version, event_id, id_assigned, event_type, "
    "event_version, data, metadata, recorded_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)"
)


class EventsourcingSQLite:
    """eventsourcing's ``SQLiteApplicationRecorder`` with its defaults, but ``synchronous=NORMAL``.

    Its datastore turns on WAL mode; the benchmark sets ``synchronous=NORMAL``
    on the connection it uses (eventsourcing has no setting for it; SQLite's
    default is ``FULL``). Used from one thread, its pool holds that one
    connection: ``check_durability`` verifies it after the runs.
    """

    def __init__(self, directory: Path, workload: Workload) -> None:
        self._datastore = SQLiteDatastore(db_name=str(directory / "eventsourcing.db"))
        self._recorder = SQLiteApplicationRecorder(self._datastore)
        self._recorder.create_table()
        with self._datastore.get_connection(commit=True) as conn:
            conn.cursor().execute("PRAGMA synchronous=NORMAL")
        self._payloads = workload.payloads

    def check_durability(self) -> None:
        """Raise unless every write went through one connection with ``synchronous=NORMAL``."""
        with self._datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA synchronous")
            (synchronous,) = cursor.fetchone()
        connections = self._datastore.pool.num_in_pool
        if synchronous != _NORMAL or connections != 1:
            raise RuntimeError(
                f"eventsourcing's SQLite pool holds {connections} connections, synchronous="
                f"{synchronous}: the benchmark expected one connection at NORMAL ({_NORMAL})"
            )

    def close(self) -> None:
        """Close the connection pool."""
        self._datastore.close()

    def append_singles(self, count: int) -> None:
        """Insert ``count`` single events, one transaction each."""
        insert, payloads = self._recorder.insert_events, self._payloads
        for n, (stream, version) in enumerate(single_appends(count)):
            insert([StoredEvent(stream, version, EVENTSOURCING_TOPIC, payloads[n % len(payloads)])])

    def append_batches(self, count: int, size: int) -> None:
        """Insert ``count`` batches of ``size`` events, each into a new stream."""
        insert, payloads = self._recorder.insert_events, self._payloads
        for _ in range(count):
            stream = uuid4()
            insert(
                [StoredEvent(stream, i + 1, EVENTSOURCING_TOPIC, payloads[i]) for i in range(size)]
            )


class RawSQLite:
    """Hand-written ``sqlite3`` on a table like uno's: the floor.

    One connection in autocommit mode, WAL and ``synchronous=NORMAL``; every
    append is ``BEGIN IMMEDIATE``, the inserts, ``COMMIT``, on the calling thread.
    """

    def __init__(self, directory: Path, workload: Workload) -> None:
        self._connection = sqlite3.connect(directory / "raw.db", isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        for statement in _CREATE:
            self._connection.execute(statement)
        self._payloads = workload.payloads

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def append_singles(self, count: int) -> None:
        """Insert ``count`` single events, one transaction each."""
        execute, payloads = self._connection.execute, self._payloads
        for n, (stream, version) in enumerate(single_appends(count)):
            execute("BEGIN IMMEDIATE")
            execute(_INSERT, _row(stream, version, payloads[n % len(payloads)], _now()))
            execute("COMMIT")

    def append_batches(self, count: int, size: int) -> None:
        """Insert ``count`` batches of ``size`` events by ``executemany``, a transaction each."""
        connection, payloads = self._connection, self._payloads
        for _ in range(count):
            stream, now = uuid4(), _now()
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                _INSERT, [_row(stream, i + 1, payloads[i], now) for i in range(size)]
            )
            connection.execute("COMMIT")


class ThreadHandOff:
    """An event loop handing work to a thread and awaiting the result, with no work at all.

    It is the floor of any store that keeps SQLite off the event loop on a
    thread of its own, as uno's does: each "append" puts a no-op on a queue
    that one thread serves, and the thread resolves the caller's future with
    ``call_soon_threadsafe``. That is two thread wake-ups, and no SQL.
    """

    def __init__(self, runner: asyncio.Runner) -> None:
        self._runner = runner
        self._queue: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="bench-hand-off", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def append_singles(self, count: int) -> None:
        """Make ``count`` round trips to the thread, one after another."""
        self._runner.run(self._round_trips(count))

    async def _round_trips(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            future = loop.create_future()
            self._queue.put(future)
            await future

    def _serve(self) -> None:
        while (future := self._queue.get()) is not None:
            future.get_loop().call_soon_threadsafe(future.set_result, None)


def _now() -> int:
    """Return the time in microseconds since the epoch, as uno stores ``recorded_at``."""
    return time.time_ns() // 1000


def _row(stream: UUID, version: int, payload: bytes, now: int) -> tuple[object, ...]:
    return (str(stream), version, uuid7().bytes, ItemAdded.event_type, 1, payload, b"", now)
