"""Arrays sent to PostgreSQL in binary: the append functions' parameters."""

from __future__ import annotations

import struct
from typing import Any

from psycopg import AsyncConnection
from psycopg.adapt import Dumper
from psycopg.pq import Format

from uno.event_storage._prepared import PreparedAppend, PreparedEvent
from uno.events import (
    uuid7,
)

__all__ = ["INT4", "INT4_OID", "BinaryArray", "BinaryArrayDumper", "event_arrays", "first_version"]

_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has nulls, element type, length, lower bound
INT4 = struct.Struct(">i")
_UUID_OID, _TEXT_OID, INT4_OID, _BYTEA_OID = 2950, 25, 23, 17


class BinaryArray:
    """A one-dimensional array without nulls, encoded in PostgreSQL's binary format.

    psycopg dumps a Python list in pure Python, looking up each element's
    dumper: about 25 µs for the append's five one-element arrays, and more per
    event. This writes the format directly from elements already in binary.
    """

    __slots__ = ("data",)

    def __init__(self, element_oid: int, elements: list[bytes], *, width: int = 0) -> None:
        header = _ARRAY_HEADER.pack(1, 0, element_oid, len(elements), 1)
        if width and elements:  # every element is ``width`` bytes long: one join
            size = INT4.pack(width)
            self.data = header + size + size.join(elements)
            return
        pack = INT4.pack
        parts = [header]
        for element in elements:
            parts.append(pack(len(element)))
            parts.append(element)
        self.data = b"".join(parts)

    @staticmethod
    def register(conn: AsyncConnection[Any]) -> None:
        """Teach ``conn`` to send binary arrays (cheap; idempotent)."""
        conn.adapters.register_dumper(BinaryArray, BinaryArrayDumper)


class BinaryArrayDumper(Dumper):
    """Send a ``BinaryArray`` as it is; the statement's cast (``%b::uuid[]``) names its type."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        """Return the encoded array."""
        data: bytes = obj.data
        return data


def event_arrays(events: list[PreparedEvent]) -> list[BinaryArray]:
    """Return the append functions' arrays: ids, types, type versions, data, metadata."""
    int4 = INT4.pack
    return [
        BinaryArray(_UUID_OID, _id_bytes(events), width=16),
        # Event types are ASCII (validate_event_type): the same in every encoding.
        BinaryArray(_TEXT_OID, [e.event_type.encode("ascii") for e in events]),
        BinaryArray(INT4_OID, [int4(e.event_version) for e in events], width=4),
        BinaryArray(_BYTEA_OID, [e.data for e in events]),
        BinaryArray(_BYTEA_OID, [e.metadata for e in events]),
    ]


def first_version(append: PreparedAppend) -> int:
    """Return the version an append that reads nothing first follows (0: a new stream)."""
    expected = append.expected_version
    return expected if type(expected) is int else 0


def _id_bytes(events: list[PreparedEvent]) -> list[bytes]:
    """Return the events' ids as bytes, with a new uuid7 for each the caller did not choose."""
    return [uuid7().bytes if e.event_id is None else e.event_id.bytes for e in events]
