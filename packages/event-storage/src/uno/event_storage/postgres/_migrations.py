"""The PostgreSQL schema's migrations: tables, the append functions, the read fence.

Each is a template for ``Names.render``: ``{events}``-style placeholders name
one store's objects. How they keep the global order is explained in
``_schema``. Released migrations are never edited; a change is a new one.
"""

from __future__ import annotations

from uno.event_storage.postgres._append_sql import APPEND_HEAD, APPEND_TAIL
from uno.event_storage.postgres._fence_sql import V6

__all__ = ["MIGRATIONS"]

_V1 = "".join(
    (
        """
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

""",
        APPEND_TAIL,
    )
)

# Version 2 replaces the append function. An append that is its autocommit
# transaction's only statement (p_alone) inserts without ON CONFLICT, whose
# speculative insertion costs an index probe and a WAL record per row: a stored
# id raises unique_violation, and the caller calls again with p_alone false,
# which looks the ids up. It also knows that its events are the transaction's
# first. Otherwise (inside a transaction, where that error would abort it) the
# function looks ids up from the start, and continues the transaction's count
# of events after its own rows (an index probe) instead of a transaction-local
# setting. The stream's state is read in one query instead of two.
_V2 = "".join(
    (
        """
DROP FUNCTION IF EXISTS {append}(text, integer, text, uuid[], text[], integer[], bytea[], bytea[]);

""",
        APPEND_HEAD,
        """    -- The lock comes before any write, so this transaction's id (taken below)
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

""",
        APPEND_TAIL,
    )
)

# Version 3 adds a path that takes no lock. An append that is its autocommit
# transaction's only statement and expects an exact version (or no stream)
# reads the event at that version, takes its transaction id only then (so the
# id is newer than that committed event's) and inserts; with 'known' (the
# caller saw that event committed, in an autocommit read or append) it skips
# the read: the unique stream
# version decides a race, and a stored id or a taken version raises
# unique_violation, on which the caller calls again with p_alone false. It
# reads the stream's deletion mark only after its insert, so a deletion either
# committed before that read (and the append is refused) or waits for the
# append's rows (see the fence in the store's deletion). Everything else takes
# the stream's lock as before, and claims the next version with its first
# event (ON CONFLICT DO NOTHING waits for a lock-free append that holds it),
# reading the stream again if one took it.
_V3 = "".join(
    (
        """
""",
        APPEND_HEAD,
        """    IF p_alone AND p_expected_state IN ('exact', 'known', 'no_stream') THEN
        current_version := CASE WHEN p_expected_state = 'no_stream' THEN 0 ELSE p_expected END;
        -- 'known': the caller saw the event at that version committed, so
        -- it exists and its writer's id is older than any this call takes.
        IF current_version > 0 AND p_expected_state = 'exact' THEN
            SELECT e.global_position INTO last_position FROM {events} e
             WHERE e.stream_id = p_stream AND e.stream_version = current_version;
        END IF;
        IF current_version = 0 OR last_position IS NOT NULL OR p_expected_state = 'known' THEN
            -- Taken after that event was read committed: newer than its writer's.
            base := pg_current_xact_id()::text::bigint << {bits};
            IF last_position IS NOT NULL AND base <= last_position THEN
                RAISE EXCEPTION USING ERRCODE = '{transaction_order_conflict}', MESSAGE = p_stream;
            END IF;
            -- A taken version or a stored id raises unique_violation: the caller
            -- calls again with p_alone false.
            INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                       event_type, event_version, data, metadata)
            SELECT base + u.ord - 1, p_stream, current_version + u.ord::integer, u.id,
                   u.type, u.version, u.data, u.metadata
              FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
                   WITH ORDINALITY AS u(id, type, version, data, metadata, ord);
            -- Read after the insert, in a newer snapshot: a deletion that
            -- committed before it shows; a later one waits for these rows.
            SELECT s.deleted INTO deleted_as FROM {streams} s WHERE s.stream_id = p_stream;
            IF deleted_as IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = '{stream_deleted}', MESSAGE = deleted_as;
            END IF;
            stream_version := current_version + n;
            global_position := base + n - 1;
            RETURN;
        END IF;
        -- No event at the expected version: the locked path below tells why.
    END IF;

    -- The lock comes before any write, so this transaction's id (taken below)
    -- is newer than that of every locked append to the stream that committed before.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream, 7));
    LOOP
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
        EXIT WHEN (p_expected_state = 'no_stream' AND current_version <> 0)
               OR (p_expected_state = 'stream_exists' AND current_version = 0)
               OR (p_expected_state IN ('exact', 'known') AND current_version <> p_expected);
        IF base IS NULL THEN
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
        END IF;
        -- A lock-free append that committed after this transaction took its id.
        IF last_position IS NOT NULL AND base + seq <= last_position THEN
            RAISE EXCEPTION USING ERRCODE = '{transaction_order_conflict}', MESSAGE = p_stream;
        END IF;

        -- The first event claims the next version; a lock-free append may hold
        -- it, uncommitted, and this waits for it to end.
        INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                   event_type, event_version, data, metadata)
        VALUES (base + seq, p_stream, current_version + 1, p_ids[1], p_types[1],
                p_versions[1], p_data[1], p_metadata[1])
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF inserted = 1 THEN
            -- The same INSERT twice: ON CONFLICT cannot be switched on by a value.
            IF p_alone THEN
                -- A stored id raises unique_violation: the caller calls again.
                INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                           event_type, event_version, data, metadata)
                SELECT base + seq + u.ord - 1, p_stream, current_version + u.ord::integer, u.id,
                       u.type, u.version, u.data, u.metadata
                  FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
                       WITH ORDINALITY AS u(id, type, version, data, metadata, ord)
                 WHERE u.ord > 1;
                inserted := n;
            ELSE
                INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                                           event_type, event_version, data, metadata)
                SELECT base + seq + u.ord - 1, p_stream, current_version + u.ord::integer, u.id,
                       u.type, u.version, u.data, u.metadata
                  FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
                       WITH ORDINALITY AS u(id, type, version, data, metadata, ord)
                 WHERE u.ord > 1
                ON CONFLICT (event_id) DO NOTHING;
                GET DIAGNOSTICS inserted = ROW_COUNT;
                inserted := inserted + 1;
            END IF;
            IF inserted = n THEN
                stream_version := current_version + n;
                global_position := base + seq + n - 1;
                RETURN;
            END IF;
            EXIT;
        END IF;
        -- Not claimed: the first id is stored already, or a lock-free append
        -- took the version meanwhile (read the stream again).
        EXIT WHEN EXISTS (SELECT 1 FROM {events} e WHERE e.event_id = p_ids[1]);
    END LOOP;

""",
        APPEND_TAIL,
    )
)

# Version 4 adds a small function for the lock-free appends that read nothing
# first: at a version the caller saw committed ('known'), or at version 0. It
# does what the append function's lock-free path does for them (take the
# transaction id, insert, then read the deletion mark in a newer snapshot) and
# nothing else: PL/pgSQL copies all of a function's variables on every call,
# and the append function has many, which cost about 10 µs an append.
_V4 = """
CREATE OR REPLACE FUNCTION {append_known}(
    p_stream text,
    p_expected integer,
    p_ids uuid[],
    p_types text[],
    p_versions integer[],
    p_data bytea[],
    p_metadata bytea[],
    OUT stream_version integer,
    OUT global_position bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    -- Taken before the insert: newer than the id of the event at p_expected,
    -- which committed before the caller saw it.
    base bigint := pg_current_xact_id()::text::bigint << {bits};
    deleted_as text;
BEGIN
    -- A taken version or a stored id raises unique_violation: the caller calls
    -- the append function instead, which takes the stream's lock and tells why.
    INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                               event_type, event_version, data, metadata)
    SELECT base + u.ord - 1, p_stream, p_expected + u.ord::integer, u.id,
           u.type, u.version, u.data, u.metadata
      FROM unnest(p_ids, p_types, p_versions, p_data, p_metadata)
           WITH ORDINALITY AS u(id, type, version, data, metadata, ord);
    -- Read after the insert, in a newer snapshot: a deletion that committed
    -- before it shows; a later one waits for these rows (its fence).
    SELECT s.deleted INTO deleted_as FROM {streams} s WHERE s.stream_id = p_stream;
    IF deleted_as IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{stream_deleted}', MESSAGE = deleted_as;
    END IF;
    stream_version := p_expected + cardinality(p_ids);
    global_position := base + cardinality(p_ids) - 1;
END
$fn$;
"""

# Version 5 adds a function that appends for several autocommit appends in one
# transaction (the store groups appends that arrive while others are under
# way). Each append is one the small function could take: its events' versions
# follow a version seen committed, or start the stream. The caller numbers
# every event's version; a taken version or a stored id raises
# unique_violation, and a deleted stream stream_deleted, and the caller then
# makes each append on its own. The deletion marks are read after the insert,
# in a newer snapshot, as the small function reads its stream's. Unlike one
# append, a group holds rows of several streams while it waits for another
# transaction's row, so it could close a cycle with a transaction that writes
# those streams in another order: it waits for a lock at most 10 ms, then
# gives up (lock_not_available), long before PostgreSQL looks for deadlocks
# (deadlock_timeout, 1 s by default), and its appends go alone.
_V5 = """
CREATE OR REPLACE FUNCTION {append_group}(
    p_streams text[],
    p_owners integer[],
    p_stream_versions integer[],
    p_ids uuid[],
    p_types text[],
    p_versions integer[],
    p_data bytea[],
    p_metadata bytea[]
) RETURNS bigint LANGUAGE plpgsql SET lock_timeout = '10ms' AS $fn$
DECLARE
    -- Taken before the insert: newer than the id of every event the appends follow.
    base bigint := pg_current_xact_id()::text::bigint << {bits};
    deleted_stream text;
BEGIN
    -- p_owners holds each event's append, as its stream's index in p_streams.
    INSERT INTO {events} AS e (global_position, stream_id, stream_version, event_id,
                               event_type, event_version, data, metadata)
    SELECT base + u.ord - 1, p_streams[u.owner], u.stream_version, u.id,
           u.type, u.version, u.data, u.metadata
      FROM unnest(p_owners, p_stream_versions, p_ids, p_types, p_versions, p_data, p_metadata)
           WITH ORDINALITY AS u(owner, stream_version, id, type, version, data, metadata, ord);
    -- Read after the insert, in a newer snapshot: a deletion that committed
    -- before it shows; a later one waits for these rows (its fence).
    SELECT s.stream_id INTO deleted_stream FROM {streams} s
     WHERE s.stream_id = ANY (p_streams) AND s.deleted IS NOT NULL
     LIMIT 1;
    IF deleted_stream IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{stream_deleted}', MESSAGE = deleted_stream;
    END IF;
    RETURN base;
END
$fn$;
"""


MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "events, streams, snapshots, checkpoints and the append function", _V1),
    (2, "an append function that inserts without ON CONFLICT when it runs alone", _V2),
    (3, "a lock-free append path for exact expected versions", _V3),
    (4, "a small append function for versions seen committed and new streams", _V4),
    (5, "an append function for several autocommit appends in one transaction", _V5),
    (6, "positions from a sequence of blocks, and a read fence of this store's appends", V6),
]
"""``(version, description, SQL template)``, applied in order and recorded."""
