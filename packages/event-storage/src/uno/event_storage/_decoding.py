"""Turning stored rows back into ``RecordedEvent``s: the hot path of every read."""

from __future__ import annotations

import gc
from collections.abc import (
    Iterator,
    Sequence,
)
from typing import Any

from uno.event_storage._prepared import DECODE_CHUNK, EMPTY_METADATA, Row
from uno.events import (
    Event,
    RecordedEvent,
    Serializer,
)
from uno.events.exceptions import (
    EventDecodeError,
    UnknownEventType,
    UpcastError,
)

__all__ = ["UNREADABLE", "Decoding", "located"]

UNREADABLE = (EventDecodeError, UnknownEventType, UpcastError)
"""What decoding a stored row may raise; ``located`` makes each say which row."""


def located(
    exc: EventDecodeError | UnknownEventType | UpcastError,
    row: Sequence[Any],
    stream_id: str | None = None,
) -> EventDecodeError | UnknownEventType | UpcastError:
    """Return ``exc`` naming the stream, stream version and global position of ``row``."""
    where = {"stream_id": stream_id or row[1], "stream_version": row[2], "position": row[3]}
    if isinstance(exc, EventDecodeError):
        return EventDecodeError(exc.event_type, exc.version, exc.reason, field=exc.field, **where)
    if isinstance(exc, UnknownEventType):
        return UnknownEventType(exc.event_type, exc.version, exc.known_versions, **where)
    return UpcastError(exc.event_type, exc.from_version, exc.reason, **where)


class Decoding:
    """The decoding half of ``EventStoreBase``: rows to ``RecordedEvent``s."""

    serializer: Serializer

    def _decode_chunks(self, rows: Sequence[Row]) -> Iterator[list[RecordedEvent[Event]]]:
        """Yield the rows' events, ``DECODE_CHUNK`` rows decoded at a time, as the caller asks.

        A row that does not decode ends the iteration, but only after the
        events of the rows before it were yielded: a reader handles every
        good event up to the bad one, then gets the error, which names the
        bad row's position (``read_all_raw`` reads it undecoded).
        """
        for start in range(0, len(rows), DECODE_CHUNK):
            chunk = rows[start : start + DECODE_CHUNK]
            try:
                events = self._decode(chunk)
            except UNREADABLE as exc:
                bad = exc.position
                yield self._decode([row for row in chunk if bad is None or row[3] < bad])
                raise
            yield events

    def _decode(
        self, rows: Sequence[Row], stream_id: str | None = None
    ) -> list[RecordedEvent[Event]]:
        """Turn rows (or plain tuples in ``Row``'s column order) into recorded events.

        The hot path of every read: it binds what it calls once per batch.
        ``stream_id``, when given, is every row's stream, and the rows' own
        ``stream_id`` is not read (a backend may leave it out).

        The garbage collector is paused meanwhile: a page allocates a few
        tracked objects per row, all kept by the list it returns, so the
        collections they would set off find nothing to free and cost about a
        fifth of a read. The objects still count towards the next collection.
        """
        if not gc.isenabled():
            return self._decode_page(rows, stream_id)
        gc.disable()
        try:
            return self._decode_page(rows, stream_id)
        finally:
            gc.enable()

    def _decode_page(
        self, rows: Sequence[Row], stream_id: str | None
    ) -> list[RecordedEvent[Event]]:
        serializer = self.serializer
        decode_rows = getattr(serializer, "decode_rows", None)  # JsonSerializer's, MsgPack's
        try:
            datas: list[Event] = decode_rows(rows, 5) if decode_rows else self._decode_each(rows)
        except UNREADABLE:
            datas = self._decode_each(rows, stream_id)  # raises again, naming the row
        decode_metadata = serializer.decode_metadata
        recorded = RecordedEvent
        empty = EMPTY_METADATA
        try:
            return [
                recorded(
                    event_id=row[0],
                    stream_id=stream_id or row[1],
                    stream_version=row[2],
                    global_position=row[3],
                    recorded_at=row[4],
                    event_type=data.event_type,
                    event_version=data.event_version,
                    data=data,
                    metadata=decode_metadata(row[8]) if row[8] else empty,
                )
                for row, data in zip(rows, datas, strict=True)
            ]
        except EventDecodeError:
            for row in rows:  # find the row whose metadata failed
                try:
                    if row[8]:
                        decode_metadata(row[8])
                except EventDecodeError as exc:
                    raise located(exc, row, stream_id) from exc
            raise

    def _decode_each(self, rows: Sequence[Row], stream_id: str | None = None) -> list[Event]:
        """Decode the rows' events one by one; an error names its row (``located``)."""
        decode = self.serializer.decode
        datas: list[Event] = []
        row: Sequence[Any] = ()
        try:
            for row in rows:
                datas.append(decode(row[5], row[6], row[7]))
        except UNREADABLE as exc:
            raise located(exc, row, stream_id) from exc
        return datas

    # -- deletion and metadata -------------------------------------------------
