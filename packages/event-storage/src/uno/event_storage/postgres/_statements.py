"""The SQL of one PostgreSQL store, rendered once with its schema and table names."""

from __future__ import annotations

from uno.event_storage.postgres._fence_sql import FENCE_LOCKS
from uno.event_storage.postgres._schema import (
    Names,
)

__all__ = ["ROW_COLUMNS", "Statements", "filters"]

ROW_COLUMNS = (
    "event_id, stream_id, stream_version, global_position, recorded_at, "
    "event_type, event_version, data, metadata"
)


class Statements:
    """The SQL of one store, rendered once with its schema and table names."""

    def __init__(self, names: Names) -> None:
        r = names.render
        self.append = r(
            "SELECT stream_version, global_position FROM {append}"
            # Arrays go in binary (%b): dumping bytea arrays as text costs more than the insert.
            "(%s, %s, %s, %b::uuid[], %b::text[], %b::integer[], %b::bytea[], %b::bytea[], %s)"
        )
        self.append_known = r(
            "SELECT stream_version, global_position FROM {append_known}"
            "(%s, %s, %b::uuid[], %b::text[], %b::integer[], %b::bytea[], %b::bytea[])"
        )
        self.append_group = r(
            "SELECT {append_group}(%b::text[], %b::integer[], %b::integer[], "
            "%b::uuid[], %b::text[], %b::integer[], %b::bytea[], %b::bytea[])"
        )
        stream = (
            # Row's columns, but not the stream's id again with every row (read_stream knows it).
            "SELECT " + ROW_COLUMNS.replace("stream_id", "NULL", 1) + ", "
            "(SELECT deleted FROM {streams} WHERE stream_id = %(id)s) FROM {events} "
            "WHERE stream_id = %(id)s AND stream_version {op} %(v)s "
            "ORDER BY stream_version {order} LIMIT %(limit)s"
        )
        self.deleted = r("SELECT deleted FROM {streams} WHERE stream_id = %s")
        # NOTIFY takes a transaction id, so its commit would wait for a WAL flush like a
        # write's. It carries no data and the events it announces are durable already:
        # commit it asynchronously (losing it in a crash costs subscribers one poll).
        self.announce = "SELECT pg_notify(%s, ''), set_config('synchronous_commit', 'off', true)"
        self.read_stream_forwards = r(stream.replace("{op}", ">=").replace("{order}", "ASC"))
        self.read_stream_backwards = r(stream.replace("{op}", "<=").replace("{order}", "DESC"))
        # The end of what readers may read (see _schema). A statement of its own, run
        # before the read: the read's snapshot must be newer than the fence.
        self.read_fence = r("SELECT {read_fence}()")
        # The oldest append in flight, its backend, and whether committed events
        # wait behind it (in this statement's snapshot, taken before the fence).
        self.fence_status = r(
            "WITH fence AS (SELECT {read_fence}() AS position), "
            "oldest AS (SELECT l.pid, l.block FROM (" + FENCE_LOCKS + ") AS l "
            "WHERE l.block > 0 ORDER BY l.block LIMIT 1) "
            "SELECT f.position, o.pid, a.state, a.xact_start, a.query_start, "
            "extract(epoch FROM clock_timestamp() - a.xact_start)::float8, "
            "EXISTS (SELECT 1 FROM {events} e WHERE e.global_position >= f.position) "
            "FROM fence f LEFT JOIN oldest o ON true LEFT JOIN pg_stat_activity a ON a.pid = o.pid"
        )
        self._read_all = {
            (types, prefix): r(
                "SELECT " + ROW_COLUMNS + " FROM {events} WHERE global_position > %s "
                "AND global_position < %s"
                + filters(types, prefix)
                + " ORDER BY global_position LIMIT %s"
            )
            for types in (False, True)
            for prefix in (False, True)
        }
        self._count_events = {
            (types, prefix): r(
                "SELECT count(*) FROM {events} WHERE global_position > %s "
                "AND global_position <= coalesce(%s::bigint, 9223372036854775807) "
                "AND global_position < %s" + filters(types, prefix)
            )
            for types in (False, True)
            for prefix in (False, True)
        }
        self.log_position = r(
            "SELECT coalesce(max(global_position), 0) FROM {events} WHERE global_position < %s"
        )
        self.stream_state = r(
            "SELECT (SELECT deleted FROM {streams} WHERE stream_id = %(id)s), "
            "(SELECT max(stream_version) FROM {events} WHERE stream_id = %(id)s)"
        )
        self.erase_events = r("DELETE FROM {events} WHERE stream_id = %s")
        # A placeholder event that a deletion holds until it commits: a negative
        # position (readers never read one) and a type no event can have.
        self.fence = r(
            "INSERT INTO {events} (global_position, stream_id, stream_version, event_id, "
            "event_type, event_version, data, metadata) VALUES "
            "(-1 - floor(random() * 4e18)::bigint, %(id)s, %(v)s, gen_random_uuid(), "
            "'$deletion', 0, '', '') ON CONFLICT DO NOTHING RETURNING event_id"
        )
        self.erase_fence = r("DELETE FROM {events} WHERE event_id = %s")
        self.erase_snapshots = r("DELETE FROM {snapshots} WHERE stream_id = %s")
        self.mark_deleted = r(
            "INSERT INTO {streams} (stream_id, deleted) VALUES (%s, %s) ON CONFLICT (stream_id) "
            "DO UPDATE SET deleted = excluded.deleted, metadata = CASE WHEN excluded.deleted = "
            "'hard' THEN NULL ELSE {streams}.metadata END"
        )
        self.get_metadata = r("SELECT metadata FROM {streams} WHERE stream_id = %s")
        self.set_metadata = r(
            "INSERT INTO {streams} AS s (stream_id, metadata) VALUES (%s, %s) "
            "ON CONFLICT (stream_id) DO UPDATE SET metadata = excluded.metadata "
            "WHERE s.deleted IS DISTINCT FROM 'hard' RETURNING 1"
        )
        self.save_snapshot = r(
            "WITH d AS (SELECT deleted FROM {streams} WHERE stream_id = %(id)s "
            "AND deleted IS NOT NULL), "
            "w AS (INSERT INTO {snapshots} (stream_id, stream_version, event_type, event_version, "
            "data) SELECT %(id)s, %(v)s, %(t)s, %(tv)s, %(d)s WHERE NOT EXISTS (SELECT 1 FROM d) "
            "ON CONFLICT (stream_id, stream_version) DO UPDATE SET "
            "event_type = excluded.event_type, event_version = excluded.event_version, "
            "data = excluded.data) "
            "SELECT deleted FROM d"
        )
        self.load_snapshot = r(
            "SELECT stream_version, event_type, event_version, data FROM {snapshots} "
            "WHERE stream_id = %s AND (%s::integer IS NULL OR stream_version <= %s::integer) "
            "ORDER BY stream_version DESC LIMIT 1"
        )
        self.load_checkpoint = r("SELECT position FROM {checkpoints} WHERE consumer = %s")
        self.save_checkpoint = r(
            "INSERT INTO {checkpoints} (consumer, position) VALUES (%s, %s) "
            "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, "
            "updated_at = clock_timestamp()"
        )

    def read_all(self, types: bool, prefix: bool) -> str:
        """Return the global-log query with the given filters."""
        return self._read_all[(types, prefix)]

    def count_events(self, types: bool, prefix: bool) -> str:
        """Return the query that counts visible events with the given filters."""
        return self._count_events[(types, prefix)]


def filters(types: bool, prefix: bool) -> str:
    """Return the conditions of ``read_all``'s filters (their parameters come in this order)."""
    return (" AND event_type = ANY (%s::text[])" if types else "") + (
        " AND starts_with(stream_id, %s)" if prefix else ""
    )
