"""The SQLite event store's tables, their migrations, and the SQL that reads and writes them.

Every function here takes an open ``sqlite3.Connection`` and does not wait for
anything but SQLite; ``uno.event_storage.sqlite`` decides which connection,
which thread (the writer's, or the event loop's for a small append) and which
transaction. Tables (with the default prefix ``uno_``)::

    uno_schema_migrations  version PK, applied_at           one row per applied step
    uno_events             position INTEGER PK                the global log
                           stream_id, stream_version         UNIQUE together
                           event_id BLOB(16), id_assigned (0: the caller's, UNIQUE; 1: ours)
                           event_type, event_version,
                           data BLOB, metadata BLOB, recorded_at (µs since the epoch, UTC)
    uno_streams            stream_id PK, deleted ('soft' | 'hard' | NULL), metadata (JSON)
    uno_snapshots          (stream_id, version) PK, event_type, event_version, data
    uno_checkpoints        consumer PK, position
    uno_high_water         one row: the last position assigned before events were erased
    uno_id_salt            one row: the random salt of the ids the store assigns
    uno_leases             name PK, generation, holder, acquired_at, expires_at (ms; 0: free)

An append numbers its events itself, after the larger of the last stored
position and the high-water mark, inside its write transaction. So positions
follow commit order and are never reused, even after the newest events are
hard-deleted, without ``AUTOINCREMENT``'s bookkeeping on every row. One query
reads that position together with the first stream's version and tombstone;
an inline append that directly follows another one, with no other write in
between, skips that query (or its position part) and starts from the ``Tip``
the previous append left.

Event ids a caller chose are kept unique by a partial index; the ids the store
assigns carry their position (``uno.event_storage.sqlite._ids``) and are found
by it, so most appends write two B-trees, not three. Schema version 2 made
that change; version 1 indexed every id.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

from uno.event_storage._prepared import (
    PreparedAppend,
    Row,
    StoredId,
    check_expected_version,
    idempotent_result,
)
from uno.event_storage.exceptions import SchemaError, StoreConfigurationError, StreamDeleted
from uno.event_storage.sqlite._ids import (
    assigned_id,
    assigned_position,
    id_base,
    salt_from_bytes,
)
from uno.event_storage.sqlite._sql import (
    ASSIGNED_IDS,
    BACKWARDS,
    COLUMNS,
    COPIED_BLOB,
    COUNT_WINDOW,
    CREATE_MIGRATIONS,
    DELETED,
    FORWARDS,
    GET_METADATA,
    HARD_DELETE,
    ID_SALT,
    INSERT,
    LAST_POSITION,
    LOAD_CHECKPOINT,
    LOAD_SNAPSHOT,
    LOG,
    MIGRATIONS,
    MOST_ROWS,
    RAISE_HIGH_WATER,
    RECORD_MIGRATION,
    ROW,
    ROW_VALUES,
    SAVE_CHECKPOINT,
    SAVE_SNAPSHOT,
    SCHEMA_VERSION,
    SET_METADATA,
    SOFT_DELETE,
    STATE,
    STATE_AND_LAST_ASSIGNED,
    STORED_IDS,
    VERSION,
    WINDOW,
    Migration,
)
from uno.events import ANY, AppendResult, ExpectedVersion
from uno.events.exceptions import WrongExpectedVersion

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "Recheck",
    "SQLiteSchema",
    "Tip",
    "recorded_now",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")
_LAST_VERSION = 2**62  # reads backwards from the end of any stream
_LAST_POSITION_BOUND = 2**63 - 1  # the largest position SQLite can store


def recorded_now() -> int:
    """Return the time as appends store it: microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


class Tip(NamedTuple):
    """Where an append left the database: its last stream's version and the last position."""

    stream_id: str
    stream_version: int
    position: int


class Recheck(Exception):
    """An optimistic append met stored ids or another version: undo it, redo it with every check.

    ``SQLiteSchema.append`` raises it, maybe after writing part of the appends;
    the caller rolls back what that call wrote (its whole transaction, or to a
    savepoint) and calls again with ``look_up_ids=True``.
    """


class SQLiteSchema:
    """The tables of one prefix and the statements that use them.

    Args:
        prefix: Prepended to every table name; letters, digits and ``_`` only,
            because it is written into the SQL.
    """

    def __init__(self, prefix: str) -> None:
        if prefix and not _PREFIX.fullmatch(prefix):
            raise StoreConfigurationError(
                f"table_prefix must be up to 31 letters, digits or '_' and not start with a "
                f"digit, got {prefix!r}"
            )
        self.prefix = prefix
        self.migrations_table = f"{prefix}schema_migrations"

        def statement(template: str) -> str:
            return template.format(p=prefix, columns=COLUMNS)

        # One INSERT for each row count up to MOST_ROWS: a batch is one of them, or a few.
        self._inserts = {
            n: statement(INSERT) + ", ".join([ROW] * n) for n in range(1, MOST_ROWS + 1)
        }
        self._state = statement(STATE)
        self._state_and_last_assigned = statement(STATE_AND_LAST_ASSIGNED)
        self._deleted = statement(DELETED)
        self._forwards = statement(FORWARDS)
        self._backwards = statement(BACKWARDS)
        self._log = statement(LOG)
        self._last_position = statement(LAST_POSITION)
        self._window = statement(WINDOW)
        self._count_window = statement(COUNT_WINDOW)
        self._soft_delete = statement(SOFT_DELETE)
        self._raise_high_water = statement(RAISE_HIGH_WATER)
        self._hard_delete = tuple(statement(t) for t in HARD_DELETE)
        self._get_metadata = statement(GET_METADATA)
        self._set_metadata = statement(SET_METADATA)
        self._save_snapshot = statement(SAVE_SNAPSHOT)
        self._load_snapshot = statement(LOAD_SNAPSHOT)
        self._load_checkpoint = statement(LOAD_CHECKPOINT)
        self._save_checkpoint = statement(SAVE_CHECKPOINT)
        self._stored_ids = statement(STORED_IDS)
        self._assigned_ids = statement(ASSIGNED_IDS)
        self._id_salt_query = statement(ID_SALT)
        self._id_salt: int | None = None  # read by migrate() or ready()
        self._version = statement(VERSION)
        self._create_migrations = statement(CREATE_MIGRATIONS)
        self._record_migration = statement(RECORD_MIGRATION)

    # -- migrations ------------------------------------------------------------

    def version(self, connection: sqlite3.Connection) -> int:
        """Return the schema version stored in the database, 0 for none."""
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (self.migrations_table,),
        ).fetchone()
        if exists is None:
            return 0
        (version,) = connection.execute(self._version).fetchone()
        return int(version)

    def ready(self, connection: sqlite3.Connection) -> int:
        """Return the stored schema version; when it is current, get ready to append."""
        have = self.version(connection)
        if have == SCHEMA_VERSION:
            self._load_id_salt(connection)
        return have

    def _load_id_salt(self, connection: sqlite3.Connection) -> None:
        (raw,) = connection.execute(self._id_salt_query).fetchone()
        self._id_salt = salt_from_bytes(raw)

    def check_version(self, have: int) -> None:
        """Raise ``SchemaError`` if the database is newer than this code."""
        if have > SCHEMA_VERSION:
            raise SchemaError(
                f"The event store schema is at version {have}, newer than the {SCHEMA_VERSION} "
                "this uno knows: a newer uno migrated it. Upgrade uno-event-storage."
            )

    def migrate(self, connection: sqlite3.Connection, now: datetime) -> None:
        """Apply the missing steps; call it inside a write transaction (``BEGIN IMMEDIATE``).

        Reading the version inside that transaction makes concurrent migrations
        safe: the second one finds the steps applied and does nothing.
        """
        connection.execute(self._create_migrations)
        have = self.version(connection)
        self.check_version(have)
        for step in MIGRATIONS:
            if step.version <= have:
                continue
            for statement in step.statements:
                connection.execute(statement.format(p=self.prefix))
            connection.execute(self._record_migration, (step.version, now.isoformat()))
        self._load_id_salt(connection)

    # -- appending -------------------------------------------------------------

    def append(
        self,
        connection: sqlite3.Connection,
        appends: list[PreparedAppend],
        recorded_at: int,
        *,
        look_up_ids: bool = False,
        tip: Tip | None = None,
    ) -> list[AppendResult]:
        """Write every append in the connection's open write transaction, at ``recorded_at``.

        ``recorded_at`` is in microseconds since the epoch (``recorded_now()``).

        Optimistic by default: insert without looking up the event ids (the
        unique index refuses stored ones). When that fails on an id or a
        version it raises ``Recheck``; roll back, then call again with
        ``look_up_ids=True``, which tells a retry (return its earlier result)
        from a conflict (raise). A plain append is its own transaction and
        rolls all of it back; inside a larger one use ``append_in_savepoint``.

        ``tip`` is what the previous append left, when nothing has written to
        the database since (the caller knows): then the last assigned position
        is not looked up, nor the stream's state if it is the same stream
        (that append found it not deleted, and nothing deleted it since).

        Raises:
            Recheck: only when ``look_up_ids`` is false.
            WrongExpectedVersion, DuplicateEventId, StreamDeleted: the appends
                are refused; roll back what this call may have written.
        """
        salt = self._id_salt
        if salt is None:
            raise SchemaError("The SQLite store appended before its schema was read: a bug in uno")
        results = []
        position = 0
        for n, append in enumerate(appends):
            if n == 0:
                if tip is None:
                    current, deleted, position = connection.execute(
                        self._state_and_last_assigned, (append.stream_id,)
                    ).fetchone()
                elif tip.stream_id == append.stream_id:
                    current, deleted, position = tip.stream_version, None, tip.position
                else:
                    current, deleted = connection.execute(
                        self._state, (append.stream_id,)
                    ).fetchone()
                    position = tip.position
            else:
                current, deleted = connection.execute(self._state, (append.stream_id,)).fetchone()
            if deleted is not None:
                raise StreamDeleted(append.stream_id, hard=deleted == "hard")
            result = self._append_one(
                connection,
                append,
                current or 0,
                recorded_at=recorded_at,
                last_position=position,
                look_up_ids=look_up_ids,
                salt=salt,
            )
            position = max(position, result.global_position)  # a retry assigns nothing
            results.append(result)
        return results

    def append_in_savepoint(
        self, connection: sqlite3.Connection, appends: list[PreparedAppend], recorded_at: int
    ) -> list[AppendResult]:
        """Write every append inside a larger transaction, or raise and leave it as it was.

        The optimistic attempt and its ``Recheck`` redo happen behind a
        savepoint, so the enclosing transaction's earlier writes stay.
        """
        connection.execute("SAVEPOINT uno_append")
        try:
            try:
                results = self.append(connection, appends, recorded_at)
            except Recheck:
                connection.execute("ROLLBACK TO uno_append")
                results = self.append(connection, appends, recorded_at, look_up_ids=True)
        except BaseException:
            if connection.in_transaction:  # SQLite may have rolled back everything itself
                connection.execute("ROLLBACK TO uno_append")
                connection.execute("RELEASE uno_append")
            raise
        connection.execute("RELEASE uno_append")
        return results

    def _append_one(
        self,
        connection: sqlite3.Connection,
        append: PreparedAppend,
        current: int,
        *,
        recorded_at: int,
        last_position: int,
        look_up_ids: bool,
        salt: int,
    ) -> AppendResult:
        stream_id = append.stream_id
        if look_up_ids:
            done = idempotent_result(append, self._stored(connection, append, salt))
            if done is not None:
                return done
        expected = append.expected_version
        # The usual cases inline; check_expected_version decides the others.
        if not (expected is ANY or (type(expected) is int and expected == current)):
            try:
                check_expected_version(stream_id, expected, current)
            except WrongExpectedVersion:
                if look_up_ids:
                    raise
                raise Recheck from None  # a retry of a stored append is not a conflict
        events = append.events
        count = len(events)
        values: list[object] = []
        base = id_base(recorded_at)
        for offset, event in enumerate(events, start=1):
            position, event_id = last_position + offset, event.event_id
            if event_id is None:
                id_bytes, assigned = assigned_id(position, base, salt), 1
            else:
                # The unique index holds chosen ids only: one that may be an id
                # this store assigned is looked up by its position instead.
                if not look_up_ids and _maybe_assigned(event_id, salt, last_position):
                    raise Recheck
                id_bytes, assigned = event_id.bytes, 0
            data, metadata = event.data, event.metadata
            values += (
                position,
                stream_id,
                current + offset,
                bytearray(id_bytes),  # bytearray: see COPIED_BLOB
                assigned,
                event.event_type,
                event.event_version,
                bytearray(data) if len(data) <= COPIED_BLOB else data,
                bytearray(metadata) if len(metadata) <= COPIED_BLOB else metadata,
                recorded_at,
            )
        try:
            self._insert_rows(connection, values)
        except sqlite3.IntegrityError:
            if look_up_ids:
                raise
            raise Recheck from None
        return AppendResult(
            stream_id=stream_id,
            stream_version=current + count,
            global_position=last_position + count,
        )

    def _insert_rows(self, connection: sqlite3.Connection, values: list[object]) -> None:
        """Insert the rows whose values follow each other in ``values``, a few INSERTs in all.

        Raises ``sqlite3.IntegrityError`` having inserted some of them, maybe.
        """
        start, end = 0, len(values)
        if end <= MOST_ROWS * ROW_VALUES:  # the common case: one INSERT, no copy
            connection.execute(self._inserts[end // ROW_VALUES], values)
            return
        while start < end:
            rows = min((end - start) // ROW_VALUES, MOST_ROWS)
            stop = start + rows * ROW_VALUES
            connection.execute(self._inserts[rows], values[start:stop])
            start = stop

    def _stored(
        self, connection: sqlite3.Connection, append: PreparedAppend, salt: int
    ) -> dict[UUID, StoredId]:
        """Return where the append's ids are stored, whoever chose them first."""
        wanted = {e.event_id.bytes: e.event_id for e in append.events if e.event_id is not None}
        if not wanted:
            return {}
        positions = [p for i in wanted.values() if (p := assigned_position(i, salt)) is not None]
        found: dict[UUID, StoredId] = {}
        for prefix, keys in ((self._stored_ids, list(wanted)), (self._assigned_ids, positions)):
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                chunk = keys[start : start + 500]
                query = f"{prefix}({', '.join('?' * len(chunk))})"
                for event_id, stream_id, version, position in connection.execute(query, chunk):
                    if event_id in wanted:  # a position's row may hold another id
                        found[wanted[event_id]] = StoredId(stream_id, version, position)
        return found

    # -- reading ---------------------------------------------------------------

    def read_stream(
        self,
        connection: sqlite3.Connection,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
    ) -> list[Row]:
        """Return a stream's rows; raise ``StreamDeleted`` for a deleted stream."""
        if backwards:
            start = _LAST_VERSION if from_version is None else from_version
            query = self._backwards
        else:
            start = 1 if from_version is None else from_version
            query = self._forwards
        rows = _rows(connection.execute(query, (stream_id, start, -1 if limit is None else limit)))
        # Checked after reading: deletion is final, so a tombstone seen now also
        # covers events read a moment ago.
        self._refuse_deleted(connection, stream_id)
        return rows

    def _refuse_deleted(self, connection: sqlite3.Connection, stream_id: str) -> None:
        found = connection.execute(self._deleted, (stream_id,)).fetchone()
        if found is not None and found[0] is not None:
            raise StreamDeleted(stream_id, hard=found[0] == "hard")

    def read_all(
        self,
        connection: sqlite3.Connection,
        after: int,
        limit: int,
        *,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
        scan_window: int,
    ) -> tuple[list[Row], int | None]:
        """Return up to ``limit`` matching rows after ``after``, and where to continue.

        Unfiltered reads continue after the last row of a full batch. Filtered
        reads look at no more than ``scan_window`` positions per call, so one
        call stays short however rare the matches; they continue after the
        window when it was not the end of the log. Everything committed is safe
        to read: one writer at a time assigns positions in commit order.
        """
        if event_types is None and stream_prefix is None:
            rows = _rows(connection.execute(self._log, (after, limit)))
            return rows, rows[-1].global_position if len(rows) == limit else None
        (last,) = connection.execute(self._last_position).fetchone()
        if last is None or last <= after:
            return [], None
        upto = min(last, after + scan_window)
        query, parameters = _filtered(self._window, after, upto, event_types, stream_prefix)
        rows = _rows(connection.execute(query + " ORDER BY position LIMIT ?", [*parameters, limit]))
        if len(rows) == limit:
            return rows, rows[-1].global_position
        return rows, upto if upto < last else None

    def log_position(self, connection: sqlite3.Connection) -> int:
        """Return the position of the last stored event, 0 if none."""
        (last,) = connection.execute(self._last_position).fetchone()
        return int(last or 0)

    def count_events(
        self,
        connection: sqlite3.Connection,
        after: int,
        before: int | None,
        *,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> int:
        """Count the stored events in positions ``(after, before]`` that pass the filters."""
        query, parameters = _filtered(
            self._count_window,
            after,
            _LAST_POSITION_BOUND if before is None else before,
            event_types,
            stream_prefix,
        )
        (count,) = connection.execute(query, parameters).fetchone()
        return int(count)

    def stream_version(self, connection: sqlite3.Connection, stream_id: str) -> int:
        """Return the version of the stream's last event, 0 if none or deleted."""
        current, deleted = connection.execute(self._state, (stream_id,)).fetchone()
        return 0 if deleted is not None else int(current or 0)

    # -- deletion, metadata, snapshots, checkpoints ----------------------------

    def delete_stream(
        self, connection: sqlite3.Connection, stream_id: str, hard: bool, expected: ExpectedVersion
    ) -> None:
        """Soft- or hard-delete a stream after checking ``expected``; erasing twice is a no-op."""
        current, deleted = connection.execute(self._state, (stream_id,)).fetchone()
        if deleted == "hard":
            return
        check_expected_version(stream_id, expected, current or 0)
        if not hard:
            connection.execute(self._soft_delete, (stream_id,))
            return
        connection.execute(self._raise_high_water)
        for statement in self._hard_delete:
            connection.execute(statement, (stream_id,))

    def get_stream_metadata(self, connection: sqlite3.Connection, stream_id: str) -> bytes | None:
        """Return the stream's metadata JSON, if set."""
        found = connection.execute(self._get_metadata, (stream_id,)).fetchone()
        return None if found is None else found[0]

    def set_stream_metadata(
        self, connection: sqlite3.Connection, stream_id: str, metadata: bytes
    ) -> None:
        """Replace the stream's metadata; refuse an erased stream."""
        found = connection.execute(self._deleted, (stream_id,)).fetchone()
        if found is not None and found[0] == "hard":
            raise StreamDeleted(stream_id, hard=True)
        connection.execute(self._set_metadata, (stream_id, metadata))

    def save_snapshot(
        self,
        connection: sqlite3.Connection,
        stream_id: str,
        version: int,
        *,
        event_type: str,
        event_version: int,
        data: bytes,
    ) -> None:
        """Store or replace a snapshot; refuse a deleted stream."""
        self._refuse_deleted(connection, stream_id)
        connection.execute(
            self._save_snapshot, (stream_id, version, event_type, event_version, data)
        )

    def load_snapshot(
        self, connection: sqlite3.Connection, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        """Return ``(version, type, type version, data)`` of the latest fitting snapshot."""
        found = connection.execute(
            self._load_snapshot,
            (stream_id, _LAST_VERSION if at_or_below is None else at_or_below),
        ).fetchone()
        return None if found is None else (found[0], found[1], found[2], found[3])

    def load_checkpoint(self, connection: sqlite3.Connection, consumer: str) -> int | None:
        """Return the consumer's checkpoint, if saved."""
        found = connection.execute(self._load_checkpoint, (consumer,)).fetchone()
        return None if found is None else int(found[0])

    def save_checkpoint(self, connection: sqlite3.Connection, consumer: str, position: int) -> None:
        """Store the consumer's checkpoint."""
        connection.execute(self._save_checkpoint, (consumer, position))


def _maybe_assigned(event_id: UUID, salt: int, last_position: int) -> bool:
    """Tell whether ``event_id`` may be the id this store assigned an event stored already."""
    position = assigned_position(event_id, salt)
    return position is not None and position <= last_position


def _filtered(
    window: str,
    after: int,
    upto: int,
    event_types: tuple[str, ...] | None,
    stream_prefix: str | None,
) -> tuple[str, list[object]]:
    """Return ``window`` (a query of positions in ``(after, upto]``) with the filters added."""
    query = [window]
    parameters: list[object] = [after, upto]
    if stream_prefix is not None:
        # substr, not LIKE: the prefix is literal, '%' and '_' included.
        query.append("AND substr(stream_id, 1, ?) = ?")
        parameters += [len(stream_prefix), stream_prefix]
    if event_types is not None:
        query.append(f"AND event_type IN ({', '.join('?' * len(event_types))})")
        parameters += event_types
    return " ".join(query), parameters


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    epoch, micro = _EPOCH, timedelta(microseconds=1)
    return [
        Row(
            UUID(bytes=event_id),
            stream_id,
            stream_version,
            position,
            epoch + micro * recorded_at,
            event_type,
            event_version,
            data,
            metadata,
        )
        for (
            event_id,
            stream_id,
            stream_version,
            position,
            recorded_at,
            event_type,
            event_version,
            data,
            metadata,
        ) in cursor
    ]
