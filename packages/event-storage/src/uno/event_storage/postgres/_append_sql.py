"""SQL text that several migrations' append functions share (never edit: released)."""

from __future__ import annotations

__all__ = ["APPEND_HEAD", "APPEND_TAIL"]

# How the append function tells a retry, a duplicate and a wrong version apart
# when its insert did not go through (every version).
APPEND_TAIL = """    -- The stream is elsewhere, or some ids are stored already (looked up only
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

# The append function's signature and variables (versions 2 and 3).
APPEND_HEAD = """CREATE OR REPLACE FUNCTION {append}(
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
"""
