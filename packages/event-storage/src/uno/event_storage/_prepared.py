"""What a backend exchanges with the shared store code: prepared appends and rows.

``EventStoreBase`` validates and encodes an append once, before anything is
written, into a ``PreparedAppend``; a backend writes it and returns stored
events as ``Row`` tuples, which the base decodes.
"""

from __future__ import annotations

from collections.abc import (
    Mapping,
)
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from uno.event_storage._arguments import MAX_VERSION
from uno.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventMetadata,
    ExpectedVersion,
    StreamState,
)
from uno.events.exceptions import (
    DuplicateEventId,
    InvalidArgument,
    WrongExpectedVersion,
)

__all__ = [
    "DECODE_CHUNK",
    "DEFAULT_MAX_EVENT_SIZE",
    "EMPTY_METADATA",
    "WALK_BATCH",
    "PreparedAppend",
    "PreparedEvent",
    "Row",
    "StoredId",
    "check_expected_version",
    "idempotent_result",
    "new_tuple",
    "validate_expected",
]

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
WALK_BATCH = 1000  # rows per _read_all call when a default primitive walks the log
EMPTY_METADATA = EventMetadata()
new_tuple = tuple.__new__

DECODE_CHUNK = 128
"""Rows that an iterating read (``read_all``, a subscription) decodes at a time.

A fetched page is decoded a chunk at a time as the caller iterates, not
whole: a caller that handles each event and lets it go then never holds
much more than a chunk's objects (a few per event), too few to set off the
garbage collector, which would otherwise scan a whole page's live events
several times over. Measured on PostgreSQL: ``read_all`` over 100,000
events in pages of 1,000 took about a fifth less time.
"""


class PreparedEvent(NamedTuple):
    """An event validated and encoded, ready to be written.

    ``event_id`` is ``None`` when the caller chose none (it appended an
    ``Event``, not a ``NewEvent``): the backend assigns one as it writes, so
    it can never be stored already. SQLite derives it from the position.
    """

    event_id: UUID | None
    event_type: str
    event_version: int
    data: bytes
    metadata: bytes


class PreparedAppend(NamedTuple):
    """One stream's validated part of an append."""

    stream_id: str
    expected_version: ExpectedVersion
    events: list[PreparedEvent]


class StoredId(NamedTuple):
    """Where an already stored event id lives."""

    stream_id: str
    stream_version: int
    global_position: int


class Row(NamedTuple):
    """A stored event as backends return it, before decoding."""

    event_id: UUID
    stream_id: str
    stream_version: int
    global_position: int
    recorded_at: datetime
    event_type: str
    event_version: int
    data: bytes
    metadata: bytes


def check_expected_version(stream_id: str, expected: ExpectedVersion, current: int) -> None:
    """Raise ``WrongExpectedVersion`` unless a stream at ``current`` meets ``expected``.

    ``current`` is the version of the stream's last event, 0 when it has none.
    """
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = current == 0
    elif expected is STREAM_EXISTS:
        ok = current > 0
    else:
        ok = current == expected
    if not ok:
        raise WrongExpectedVersion(stream_id, expected, current or None)


def idempotent_result(
    append: PreparedAppend, stored: Mapping[UUID, StoredId]
) -> AppendResult | None:
    """Decide what an append whose event ids may already be stored does.

    Returns ``None`` when none of its ids is stored (write it), the result of the
    earlier append when all are stored in its stream (a retry: write nothing),
    and raises ``DuplicateEventId`` for anything in between.
    """
    if not stored:
        return None
    ids = [event.event_id for event in append.events]  # None: assigned now, never stored
    if len(stored) == len(ids) and all(s.stream_id == append.stream_id for s in stored.values()):
        last = max(stored.values(), key=lambda s: s.stream_version)
        return AppendResult(
            stream_id=append.stream_id,
            stream_version=last.stream_version,
            global_position=last.global_position,
        )
    raise DuplicateEventId(append.stream_id, [i for i in ids if i is not None and i in stored])


def validate_expected(expected: object) -> ExpectedVersion:
    """Return ``expected`` if it is a ``StreamState`` or a stream version, else raise."""
    if isinstance(expected, StreamState):
        return expected
    if type(expected) is int and 0 <= expected <= MAX_VERSION:
        return expected
    raise InvalidArgument(
        "expected_version",
        expected,
        f"ANY, NO_STREAM, STREAM_EXISTS or an int stream version from 0 to {MAX_VERSION:,}",
    )
