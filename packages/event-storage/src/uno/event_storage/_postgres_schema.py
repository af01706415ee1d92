"""The PostgreSQL schema: versioned migrations and the append function.

Global positions are ``transaction id * 2**20 + n``: the transaction id
(``pg_current_xact_id()``) is taken only after the append holds its streams'
advisory locks, and ``n`` counts the transaction's events. Readers read only
below ``pg_snapshot_xmin(pg_current_snapshot()) * 2**20``, where every
transaction has ended, so a reader never skips an event that commits late,
never sees a rolled-back one, and writers to different streams never wait for
each other. A transaction that wrote before appending may hold an older id
than a concurrent append to the same stream that committed first; the append
function refuses that case (``TransactionOrderConflict``) rather than break the
stream's order in the global log.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from uno.event_storage.exceptions import StoreConfigurationError

__all__ = ["MIGRATIONS", "POSITION_BITS", "SQLSTATES", "Names", "migration_lock_key"]

POSITION_BITS = 20
"""Low bits of a global position that number events within one transaction."""

SQLSTATES = {
    "duplicate_event_id": "UN001",
    "stream_deleted": "UN002",
    "wrong_expected_version": "UN003",
    "transaction_order_conflict": "UN004",
    "too_many_events": "UN005",
}

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")


class Names(NamedTuple):
    """Quoted, validated names of one store's objects."""

    schema: str
    prefix: str

    @classmethod
    def of(cls, schema: str, prefix: str) -> Names:
        """Validate ``schema`` and ``prefix`` (lowercase letters, digits, ``_``)."""
        if not _IDENTIFIER.fullmatch(schema):
            raise StoreConfigurationError(
                f"schema {schema!r} must be 1-40 lowercase letters, digits or '_', "
                "starting with a letter or '_'"
            )
        if prefix and not _IDENTIFIER.fullmatch(prefix):
            raise StoreConfigurationError(
                f"table_prefix {prefix!r} must be up to 40 lowercase letters, digits or '_'"
            )
        return cls(schema, prefix)

    def table(self, name: str) -> str:
        """Return the qualified name of a table or function of this store."""
        return f'"{self.schema}"."{self.prefix}{name}"'

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this store."""
        return f"{self.schema}.{self.prefix}events"

    def render(self, template: str) -> str:
        """Replace ``{events}``-style placeholders with this store's qualified names."""
        names = {
            n: self.table(n)
            for n in ("events", "streams", "snapshots", "checkpoints", "migrations", "append")
        }
        return template.format(
            schema=f'"{self.schema}"',
            channel=self.channel,
            bits=POSITION_BITS,
            **names,
            **SQLSTATES,
        )


def migration_lock_key(names: Names) -> str:
    """Return the text whose hash is the advisory lock that serializes migrations."""
    return f"uno.event_storage.migrate:{names.schema}.{names.prefix}"


_V1 = """
CREATE TABLE IF NOT EXISTS {events} (
    global_position bigint PRIMARY KEY,
    stream_id text NOT NULL,
    stream_version integer NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    event_version integer NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, stream_version)
);

CREATE TABLE IF NOT EXISTS {streams} (
    stream_id text PRIMARY KEY,
    deleted text CHECK (deleted IN ('soft', 'hard')),
    metadata bytea
);

CREATE TABLE IF NOT EXISTS {snapshots} (
    stream_id text NOT NULL,
    stream_version integer NOT NULL,
    event_type text NOT NULL,
    event_version integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (stream_id, stream_version)
);

CREATE TABLE IF NOT EXISTS {checkpoints} (
    consumer text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION {append}(
    p_stream text,
    p_expected integer,
    p_expected_state text,
    p_ids uuid[],
    p_types text[],
    p_versions integer[],
    p_data bytea[],
    p_metadata bytea[],
    OUT stream_version integer,
    OUT global_position bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_ids);
    inserted integer := 0;
    stored integer;
    stored_here integer;
    deleted_as text;
    current_version integer;
    last_position bigint;
    base bigint;
    seq integer;
BEGIN
    -- The lock comes before any write, so this transaction's id (taken below)
    -- is newer than that of every append to the stream that committed before.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream, 7));

    SELECT s.deleted INTO deleted_as FROM {streams} s WHERE s.stream_id = p_stream;
    IF deleted_as IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{stream_deleted}', MESSAGE = deleted_as;
    END IF;

    SELECT e.stream_version, e.global_position INTO current_version, last_position
      FROM {events} e WHERE e.stream_id = p_stream
     ORDER BY e.stream_version DESC LIMIT 1;
    current_version := coalesce(current_version, 0);

    IF NOT ((p_expected_state = 'no_stream' AND current_version <> 0)
            OR (p_expected_state = 'stream_exists' AND current_version = 0)
            OR (p_expected_state = 'exact' AND current_version <> p_expected)) THEN
        base := pg_current_xact_id()::text::bigint << {bits};
        seq := coalesce(nullif(current_setting('uno.event_sequence', true), ''), '0')::integer;
        IF seq + n > (1 << {bits}) THEN
            RAISE EXCEPTION USING ERRCODE = '{too_many_events}', MESSAGE = (1 << {bits})::text;
        END IF;
        PERFORM set_config('uno.event_sequence', (seq + n)::text, true);
        IF last_position IS NOT NULL AND base + seq <= last_position THEN
            RAISE EXCEPTION USING ERRCODE = '{transaction_order_conflict}', MESSAGE = p_stream;
        END IF;

        INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                   event_type, event_version, data, metadata)
        SELECT base + seq + u.ord - 1, p_stream, current_version + u.ord::integer, u.id,
               u.type, u.version, u.data, u.metadata
          FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
               WITH ORDINALITY AS u(id, type, version, data, metadata, ord)
        ON CONFLICT (event_id) DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF inserted = n THEN
            stream_version := current_version + n;
            global_position := base + seq + n - 1;
            RETURN;
        END IF;
    END IF;

    -- The stream is elsewhere, or some ids are stored already (looked up only
    -- now, off the common path): a retry of an append stored whole succeeds.
    SELECT count(*), count(*) FILTER (WHERE e.stream_id = p_stream),
           max(e.stream_version), max(e.global_position)
      INTO stored, stored_here, stream_version, global_position
      FROM {events} e
     WHERE e.event_id = ANY (p_ids)
       AND (base IS NULL OR e.global_position NOT BETWEEN base + seq AND base + seq + n - 1);
    IF stored = n AND stored_here = n THEN
        RETURN;
    END IF;
    IF stored > 0 THEN
        -- Raising undoes this call's inserts too.
        RAISE EXCEPTION USING ERRCODE = '{duplicate_event_id}', MESSAGE = (
            SELECT string_agg(e.event_id::text, ',') FROM {events} e
             WHERE e.event_id = ANY (p_ids)
               AND (base IS NULL OR e.global_position NOT BETWEEN base + seq AND base + seq + n - 1)
        );
    END IF;
    RAISE EXCEPTION USING ERRCODE = '{wrong_expected_version}', MESSAGE = current_version::text;
END
$fn$;
"""

# Version 2 replaces the append function. An append that is its autocommit
# transaction's only statement (p_alone) inserts without ON CONFLICT, whose
# speculative insertion costs an index probe and a WAL record per row: a stored
# id raises unique_violation, and the caller calls again with p_alone false,
# which looks the ids up. It also knows that its events are the transaction's
# first. Otherwise (inside a transaction, where that error would abort it) the
# function looks ids up from the start, and continues the transaction's count
# of events after its own rows (an index probe) instead of a transaction-local
# setting. The stream's state is read in one query instead of two.
_V2 = """
DROP FUNCTION IF EXISTS {append}(text, integer, text, uuid[], text[], integer[], bytea[], bytea[]);

CREATE OR REPLACE FUNCTION {append}(
    p_stream text,
    p_expected integer,
    p_expected_state text,
    p_ids uuid[],
    p_types text[],
    p_versions integer[],
    p_data bytea[],
    p_metadata bytea[],
    p_alone boolean,
    OUT stream_version integer,
    OUT global_position bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := cardinality(p_ids);
    inserted integer := 0;
    stored integer;
    stored_here integer;
    deleted_as text;
    current_version integer;
    last_position bigint;
    base bigint;
    seq bigint := 0;
BEGIN
    -- The lock comes before any write, so this transaction's id (taken below)
    -- is newer than that of every append to the stream that committed before.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream, 7));

    SELECT (SELECT s.deleted FROM {streams} s WHERE s.stream_id = p_stream),
           last.stream_version, last.global_position
      INTO deleted_as, current_version, last_position
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (
          SELECT e.stream_version, e.global_position FROM {events} e
           WHERE e.stream_id = p_stream
           ORDER BY e.stream_version DESC LIMIT 1
      ) AS last ON true;
    IF deleted_as IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{stream_deleted}', MESSAGE = deleted_as;
    END IF;
    current_version := coalesce(current_version, 0);

    IF NOT ((p_expected_state = 'no_stream' AND current_version <> 0)
            OR (p_expected_state = 'stream_exists' AND current_version = 0)
            OR (p_expected_state = 'exact' AND current_version <> p_expected)) THEN
        base := pg_current_xact_id()::text::bigint << {bits};
        IF NOT p_alone THEN
            -- Earlier appends of this transaction hold positions from base on.
            SELECT coalesce(max(e.global_position) - base + 1, 0) INTO seq
              FROM {events} e
             WHERE e.global_position >= base AND e.global_position < base + (1 << {bits});
        END IF;
        IF seq + n > (1 << {bits}) THEN
            RAISE EXCEPTION USING ERRCODE = '{too_many_events}', MESSAGE = (1 << {bits})::text;
        END IF;
        IF last_position IS NOT NULL AND base + seq <= last_position THEN
            RAISE EXCEPTION USING ERRCODE = '{transaction_order_conflict}', MESSAGE = p_stream;
        END IF;

        -- The same INSERT twice: ON CONFLICT cannot be switched on by a value.
        IF p_alone THEN
            -- A stored id raises unique_violation: the caller calls again.
            INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                       event_type, event_version, data, metadata)
            SELECT base + seq + u.ord - 1, p_stream, current_version + u.ord::integer, u.id,
                   u.type, u.version, u.data, u.metadata
              FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
                   WITH ORDINALITY AS u(id, type, version, data, metadata, ord);
            inserted := n;
        ELSE
            INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                       event_type, event_version, data, metadata)
            SELECT base + seq + u.ord - 1, p_stream, current_version + u.ord::integer, u.id,
                   u.type, u.version, u.data, u.metadata
              FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
                   WITH ORDINALITY AS u(id, type, version, data, metadata, ord)
            ON CONFLICT (event_id) DO NOTHING;
            GET DIAGNOSTICS inserted = ROW_COUNT;
        END IF;
        IF inserted = n THEN
            stream_version := current_version + n;
            global_position := base + seq + n - 1;
            RETURN;
        END IF;
    END IF;

    -- The stream is elsewhere, or some ids are stored already (looked up only
    -- now, off the common path): a retry of an append stored whole succeeds.
    SELECT count(*), count(*) FILTER (WHERE e.stream_id = p_stream),
           max(e.stream_version), max(e.global_position)
      INTO stored, stored_here, stream_version, global_position
      FROM {events} e
     WHERE e.event_id = ANY (p_ids)
       AND (base IS NULL OR e.global_position NOT BETWEEN base + seq AND base + seq + n - 1);
    IF stored = n AND stored_here = n THEN
        RETURN;
    END IF;
    IF stored > 0 THEN
        -- Raising undoes this call's inserts too.
        RAISE EXCEPTION USING ERRCODE = '{duplicate_event_id}', MESSAGE = (
            SELECT string_agg(e.event_id::text, ',') FROM {events} e
             WHERE e.event_id = ANY (p_ids)
               AND (base IS NULL OR e.global_position NOT BETWEEN base + seq AND base + seq + n - 1)
        );
    END IF;
    RAISE EXCEPTION USING ERRCODE = '{wrong_expected_version}', MESSAGE = current_version::text;
END
$fn$;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "events, streams, snapshots, checkpoints and the append function", _V1),
    (2, "an append function that inserts without ON CONFLICT when it runs alone", _V2),
]
"""``(version, description, SQL template)``, applied in order and recorded."""
