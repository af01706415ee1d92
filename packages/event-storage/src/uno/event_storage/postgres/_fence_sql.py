"""Migration 6: positions from a sequence of blocks, and the read fence (see ``_schema``)."""

from __future__ import annotations

from uno.event_storage.postgres._append_sql import APPEND_HEAD, APPEND_TAIL

__all__ = ["FENCE_LOCKS", "V6"]

# Where version 6's appends take their positions: announce an append in flight
# (the shared lock on block 0), take a block, lock it; the fence function waits
# for a backend between the first and the last step.
_TAKE_BLOCK = """
    PERFORM pg_advisory_xact_lock_shared({fence_key}, 0);
    base := nextval('{blocks}');
    PERFORM pg_advisory_xact_lock(({fence_key} | (base >> 32))::integer,
                                  (base & 4294967295)::bit(32)::integer);
    base := base << {bits};
    seq := 0;"""


def _take_block(indent: int) -> str:
    return _TAKE_BLOCK.replace("\n    ", "\n" + " " * indent)


# This store's fence locks in pg_locks: (backend, block), block 0 the announcement.
FENCE_LOCKS = """SELECT k.pid,
                       ((k.classid::bigint & {block_high_mask}) << 32) | k.objid::bigint AS block
                  FROM pg_locks k
                 WHERE k.locktype = 'advisory' AND k.objsubid = 2
                   AND k.database = (SELECT d.oid FROM pg_database d
                                      WHERE d.datname = current_database())
                   AND k.classid::bigint >> {block_shift} = {fence_tag}"""

# Version 6 replaces transaction ids with blocks from a sequence (see _schema).
# The sequence starts above every stored position's block and every transaction
# id, so positions keep growing; the table lock waits for appends under way and
# holds new ones until the migration commits. CACHE 1 keeps nextval in real-time
# order across sessions, which the stream order relies on. The fence function
# raises fence_isolation in a REPEATABLE READ or SERIALIZABLE transaction: its
# snapshot is older than the fence and would miss events the fence lets through.
V6 = "".join(
    (
        """
LOCK TABLE {events} IN EXCLUSIVE MODE;

DO $do$
BEGIN
    EXECUTE format(
        'CREATE SEQUENCE {blocks} AS bigint MINVALUE 1 MAXVALUE %s START %s CACHE 1 NO CYCLE',
        {max_block},
        greatest((SELECT coalesce(max(e.global_position), 0) >> {bits} FROM {events} e),
                 pg_current_xact_id()::text::bigint) + 1);
END
$do$;

CREATE FUNCTION {read_fence}() RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    next_block bigint;
    oldest bigint;
    pending boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = '{fence_isolation}',
            MESSAGE = current_setting('transaction_isolation');
    END IF;
    LOOP
        -- First the blocks taken so far: each is in pg_locks below, or its
        -- transaction has ended (and its commit is visible).
        SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END
          INTO next_block FROM {blocks} s;
        SELECT min(b.oldest),
               -- A backend announced but not yet locked is taking a block now;
               -- one that is not running a statement failed on the way (ignore it).
               bool_or(CASE WHEN b.announced_only
                            THEN EXISTS (SELECT 1 FROM pg_stat_activity a
                                          WHERE a.pid = b.pid AND a.state = 'active')
                            ELSE false END)
          INTO oldest, pending
          FROM (SELECT l.pid, min(l.block) FILTER (WHERE l.block > 0) AS oldest,
                       count(*) FILTER (WHERE l.block > 0) = 0 AS announced_only
                  FROM ("""
        + FENCE_LOCKS
        + """) AS l
                 GROUP BY l.pid) AS b;
        EXIT WHEN NOT coalesce(pending, false);
        PERFORM pg_sleep(0.0002);
        -- pg_stat_activity is read once per transaction unless told otherwise.
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RETURN least(coalesce(oldest, next_block), next_block) << {bits};
END
$fn$;

""",
        APPEND_HEAD.replace("    seq bigint := 0;\n", "    seq bigint := 0;\n    reused text;\n"),
        """    IF n > (1 << {bits}) THEN
        RAISE EXCEPTION USING ERRCODE = '{too_many_events}', MESSAGE = (1 << {bits})::text;
    END IF;
    IF p_alone AND p_expected_state IN ('exact', 'known', 'no_stream') THEN
        current_version := CASE WHEN p_expected_state = 'no_stream' THEN 0 ELSE p_expected END;
        -- 'known': the caller saw the event at that version committed.
        IF current_version > 0 AND p_expected_state = 'exact' THEN
            SELECT e.global_position INTO last_position FROM {events} e
             WHERE e.stream_id = p_stream AND e.stream_version = current_version;
        END IF;
        IF current_version = 0 OR last_position IS NOT NULL OR p_expected_state = 'known' THEN
            -- Taken after that event was read committed: a later block than its own."""
        + _take_block(12)
        + """
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

    -- The lock comes before the block: every locked append to the stream that
    -- committed before has an earlier block.
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
        IF base IS NULL AND NOT p_alone THEN
            -- This transaction's latest block, and how much of it its appends used.
            reused := nullif(current_setting('{block_setting}', true), '');
            IF reused IS NOT NULL THEN
                base := split_part(reused, ':', 1)::bigint;
                seq := split_part(reused, ':', 2)::bigint;
                IF seq + n > (1 << {bits}) THEN
                    base := NULL;
                END IF;
            END IF;
        END IF;
        -- No block yet, or one taken before a lock-free append to the stream
        -- took its own (which committed since): take a later one.
        IF base IS NULL OR base + seq <= last_position THEN"""
        + _take_block(12)
        + """
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
                IF NOT p_alone THEN
                    PERFORM set_config('{block_setting}', base || ':' || (seq + n), true);
                END IF;
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
        """
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
    base bigint;
    seq integer;
    deleted_as text;
BEGIN
    -- Taken before the insert: later than the block of the event at p_expected,
    -- which committed before the caller saw it."""
        + _take_block(4)
        + """
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
    base bigint;
    seq integer;
    deleted_stream text;
BEGIN
    -- Taken before the insert: later than the block of every event the appends follow."""
        + _take_block(4)
        + """
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
""",
    )
)
