"""The SQLite schema's SQL: its migrations, and the statements ``SQLiteSchema`` runs.

Statement templates take ``{p}``, the table prefix, and ``{columns}``, a Row's
columns.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ASSIGNED_IDS",
    "BACKWARDS",
    "COLUMNS",
    "COPIED_BLOB",
    "COUNT_WINDOW",
    "CREATE_MIGRATIONS",
    "DELETED",
    "FORWARDS",
    "GET_METADATA",
    "HARD_DELETE",
    "ID_SALT",
    "INSERT",
    "LAST_POSITION",
    "LOAD_CHECKPOINT",
    "LOAD_SNAPSHOT",
    "LOG",
    "MIGRATIONS",
    "MOST_ROWS",
    "RAISE_HIGH_WATER",
    "RECORD_MIGRATION",
    "ROW",
    "ROW_VALUES",
    "SAVE_CHECKPOINT",
    "SAVE_SNAPSHOT",
    "SCHEMA_VERSION",
    "SET_METADATA",
    "SOFT_DELETE",
    "STATE",
    "STATE_AND_LAST_ASSIGNED",
    "STORED_IDS",
    "VERSION",
    "WINDOW",
    "Migration",
]

COLUMNS = (
    "event_id, stream_id, stream_version, position, recorded_at, "
    "event_type, event_version, data, metadata"
)


class Migration(NamedTuple):
    """One schema step: its version and its statements, with ``{p}`` for the table prefix."""

    version: int
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            """CREATE TABLE {p}events (
                position INTEGER PRIMARY KEY,
                stream_id TEXT NOT NULL,
                stream_version INTEGER NOT NULL,
                event_id BLOB NOT NULL UNIQUE,
                event_type TEXT NOT NULL,
                event_version INTEGER NOT NULL,
                data BLOB NOT NULL,
                metadata BLOB NOT NULL,
                recorded_at INTEGER NOT NULL,
                UNIQUE (stream_id, stream_version)
            )""",
            """CREATE TABLE {p}streams (
                stream_id TEXT PRIMARY KEY,
                deleted TEXT CHECK (deleted IN ('soft', 'hard')),
                metadata BLOB
            ) WITHOUT ROWID""",
            """CREATE TABLE {p}snapshots (
                stream_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                event_type TEXT NOT NULL,
                event_version INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (stream_id, version)
            ) WITHOUT ROWID""",
            """CREATE TABLE {p}checkpoints (
                consumer TEXT PRIMARY KEY,
                position INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE {p}high_water (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                position INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        (
            # Only the ids callers chose stay in a unique index: the events table
            # is rebuilt without its UNIQUE (event_id), and every id stored so
            # far counts as chosen, so re-appending any of them is still found.
            """CREATE TABLE {p}events_v2 (
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
            """INSERT INTO {p}events_v2 (position, stream_id, stream_version, event_id,
                id_assigned, event_type, event_version, data, metadata, recorded_at)
            SELECT position, stream_id, stream_version, event_id, 0, event_type,
                event_version, data, metadata, recorded_at
            FROM {p}events ORDER BY position""",
            "DROP TABLE {p}events",
            "ALTER TABLE {p}events_v2 RENAME TO {p}events",
            "CREATE UNIQUE INDEX {p}events_chosen_id ON {p}events (event_id) WHERE id_assigned = 0",
            """CREATE TABLE {p}id_salt (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                salt BLOB NOT NULL
            )""",
            "INSERT INTO {p}id_salt (id, salt) VALUES (1, randomblob(10))",
        ),
    ),
    Migration(
        3,
        (
            # Leases that hold across the processes of one machine: see sqlite/_leases.py.
            # Times are milliseconds since the epoch; expires_at 0 means released. A
            # released row stays, so that a name's generation never repeats.
            """CREATE TABLE {p}leases (
                name TEXT PRIMARY KEY,
                generation INTEGER NOT NULL,
                holder TEXT NOT NULL,
                acquired_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
)
"""Every schema step, oldest first. Append new steps; never edit a released one."""

SCHEMA_VERSION = MIGRATIONS[-1].version


# Statement templates: {p} is the table prefix, {columns} the columns of a Row.
INSERT = (
    "INSERT INTO {p}events (position, stream_id, stream_version, event_id, id_assigned, "
    "event_type, event_version, data, metadata, recorded_at) VALUES "
)
ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
ROW_VALUES = 10
MOST_ROWS = 64  # rows per INSERT: 640 parameters, within the 999 of older SQLite builds
COPIED_BLOB = 16 * 1024
"""Largest blob that an INSERT binds as a ``bytearray`` copy rather than as the ``bytes`` it is.

``sqlite3`` binds ``int``, ``float``, ``str`` and ``bytearray`` values as they
are, but looks up an adapter for any other type, ``bytes`` included: a tuple,
a dict lookup and two attribute lookups, about half a microsecond for each
blob. Copying a small blob costs less than that; a large one more.
"""
STATE = (
    "SELECT (SELECT max(stream_version) FROM {p}events WHERE stream_id = ?1), "
    "(SELECT deleted FROM {p}streams WHERE stream_id = ?1)"
)
STATE_AND_LAST_ASSIGNED = (
    "SELECT (SELECT max(stream_version) FROM {p}events WHERE stream_id = ?1), "
    "(SELECT deleted FROM {p}streams WHERE stream_id = ?1), "
    "max(coalesce((SELECT max(position) FROM {p}events), 0), "
    "coalesce((SELECT position FROM {p}high_water WHERE id = 1), 0))"
)
DELETED = "SELECT deleted FROM {p}streams WHERE stream_id = ?"
FORWARDS = (
    "SELECT {columns} FROM {p}events WHERE stream_id = ? AND stream_version >= ? "
    "ORDER BY stream_version LIMIT ?"
)
BACKWARDS = (
    "SELECT {columns} FROM {p}events WHERE stream_id = ? AND stream_version <= ? "
    "ORDER BY stream_version DESC LIMIT ?"
)
LOG = "SELECT {columns} FROM {p}events WHERE position > ? ORDER BY position LIMIT ?"
LAST_POSITION = "SELECT max(position) FROM {p}events"
WINDOW = "SELECT {columns} FROM {p}events WHERE position > ? AND position <= ?"
COUNT_WINDOW = "SELECT count(*) FROM {p}events WHERE position > ? AND position <= ?"
SOFT_DELETE = (
    "INSERT INTO {p}streams (stream_id, deleted) VALUES (?, 'soft') "
    "ON CONFLICT (stream_id) DO UPDATE SET deleted = 'soft'"
)
RAISE_HIGH_WATER = (
    # WHERE true: SQLite needs it to parse an upsert whose rows come from a SELECT.
    "INSERT INTO {p}high_water (id, position) SELECT 1, coalesce(max(position), 0) "
    "FROM {p}events WHERE true "
    "ON CONFLICT (id) DO UPDATE SET position = max(position, excluded.position)"
)
HARD_DELETE = (
    "DELETE FROM {p}events WHERE stream_id = ?1",
    "DELETE FROM {p}snapshots WHERE stream_id = ?1",
    "INSERT INTO {p}streams (stream_id, deleted) VALUES (?1, 'hard') "
    "ON CONFLICT (stream_id) DO UPDATE SET deleted = 'hard', metadata = NULL",
)
GET_METADATA = "SELECT metadata FROM {p}streams WHERE stream_id = ?"
SET_METADATA = (
    "INSERT INTO {p}streams (stream_id, metadata) VALUES (?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET metadata = excluded.metadata"
)
SAVE_SNAPSHOT = (
    "INSERT OR REPLACE INTO {p}snapshots (stream_id, version, event_type, event_version, data) "
    "VALUES (?, ?, ?, ?, ?)"
)
LOAD_SNAPSHOT = (
    "SELECT version, event_type, event_version, data FROM {p}snapshots "
    "WHERE stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1"
)
LOAD_CHECKPOINT = "SELECT position FROM {p}checkpoints WHERE consumer = ?"
SAVE_CHECKPOINT = (
    "INSERT INTO {p}checkpoints (consumer, position) VALUES (?, ?) "
    "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position"
)
STORED_IDS = (
    "SELECT event_id, stream_id, stream_version, position FROM {p}events "
    "WHERE id_assigned = 0 AND event_id IN "
)
ASSIGNED_IDS = (
    "SELECT event_id, stream_id, stream_version, position FROM {p}events "
    "WHERE id_assigned = 1 AND position IN "
)
ID_SALT = "SELECT salt FROM {p}id_salt WHERE id = 1"
VERSION = "SELECT coalesce(max(version), 0) FROM {p}schema_migrations"
CREATE_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS {p}schema_migrations "
    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
)
RECORD_MIGRATION = "INSERT INTO {p}schema_migrations (version, applied_at) VALUES (?, ?)"
