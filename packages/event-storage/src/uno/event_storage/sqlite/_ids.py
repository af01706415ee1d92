"""The event ids the SQLite store assigns: UUIDv7s that carry their own position.

An event appended without an id of the caller's (an ``Event``, not a
``NewEvent``) gets one as it is written. It is a version 7 UUID (RFC 9562):
its first 48 bits are the millisecond of ``recorded_at``, and its 74 random
bits are the event's global position XOR a random salt drawn once per
database. So:

- within a database, two positions never share an id (XOR is a bijection);
- two databases almost never do (their salts differ), so events copied from
  one store into another keep unique ids;
- the row of an assigned id is found from the id alone, by position, which is
  the table's primary key. Assigned ids need no unique index of their own,
  and an append writes one B-tree fewer: only ids a caller chose are indexed.

A caller may still hand such an id back (re-appending an event it read):
``assigned_position`` tells which row to compare it with, exactly.
"""

from __future__ import annotations

from uuid import UUID

__all__ = ["assigned_id", "assigned_position", "id_base", "salt_from_bytes"]

_SALT_MASK = (1 << 74) - 1  # the 74 random bits of a UUIDv7
_RAND_B = (1 << 62) - 1  # the 62 bits after the variant
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)
_POSITIONS = 1 << 63  # SQLite's INTEGER PRIMARY KEY is a signed 64-bit int


def salt_from_bytes(raw: bytes) -> int:
    """Return the salt stored as ``raw`` (``randomblob(10)``), cut to its 74 bits."""
    return int.from_bytes(raw, "big") & _SALT_MASK


def id_base(recorded_at: int) -> int:
    """Return what every id assigned at ``recorded_at`` (µs since the epoch) shares."""
    return ((recorded_at // 1000) << 80) | _VERSION_VARIANT


def assigned_id(position: int, base: int, salt: int) -> bytes:
    """Return the 16 bytes of the id of the event at ``position``, ``base`` from ``id_base``."""
    field = position ^ salt
    return (base | ((field >> 62) << 64) | (field & _RAND_B)).to_bytes(16, "big")


def assigned_position(event_id: UUID, salt: int) -> int | None:
    """Return the position whose assigned id ``event_id`` would be, or ``None`` if no position's.

    Any stored row at that position must still be compared with the id: a
    caller's own UUIDv7 decodes to some position too, whose row is another's.
    """
    n = event_id.int
    if (n >> 76) & 0xF != 0x7 or (n >> 62) & 0b11 != 0b10:
        return None
    position = ((((n >> 64) & 0xFFF) << 62) | (n & _RAND_B)) ^ salt
    return position if 0 < position < _POSITIONS else None
