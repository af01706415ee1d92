"""The in-memory event store: for tests and examples; nothing survives the process."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit
from uuid import UUID

from uno.event_storage._core import (
    EventStoreBase,
    PreparedAppend,
    Row,
    StoredId,
    check_expected_version,
    idempotent_result,
)
from uno.event_storage.exceptions import StoreConfigurationError, StreamDeleted
from uno.events import AppendResult, EventRegistry, ExpectedVersion, SystemClock

__all__ = ["InMemoryEventStore"]


class _Stream:
    __slots__ = ("deleted", "metadata", "rows")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.deleted: str | None = None  # None, "soft" or "hard"
        self.metadata: bytes | None = None


class InMemoryEventStore(EventStoreBase):
    """An event store in a Python process's memory: ``memory://``.

    Every operation is atomic because it runs without yielding to the event
    loop. Useful for tests and demos; it has no transactions to join.
    """

    backend: ClassVar[str] = "memory"

    def __init__(self, registry: EventRegistry, **options: Any) -> None:
        super().__init__(registry, **options)
        self._clock = SystemClock()
        self._log: list[Row] = []
        self._positions: list[int] = []
        self._streams: dict[str, _Stream] = {}
        self._ids: dict[UUID, StoredId] = {}
        self._snapshots: dict[str, dict[int, tuple[str, int, bytes]]] = {}
        self._checkpoints: dict[str, int] = {}
        self._next_position = 1

    @classmethod
    async def from_url(cls, url: str, *, registry: EventRegistry, **options: Any) -> Self:
        """Open a store for ``memory://`` (the URL holds nothing else)."""
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/"):
            raise StoreConfigurationError(f"an in-memory store's URL is 'memory://', got {url!r}")
        return cls(registry, **options)

    async def migrate(self) -> None:
        """Do nothing: memory has no schema."""

    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        # Check everything first, then write: an error leaves nothing behind.
        plans: list[tuple[PreparedAppend, int] | AppendResult] = []
        for append in appends:
            stream = self._live_stream(append.stream_id)
            stored = {
                e.event_id: self._ids[e.event_id] for e in append.events if e.event_id in self._ids
            }
            done = idempotent_result(append, stored)
            if done is not None:
                plans.append(done)
                continue
            current = len(stream.rows) if stream is not None else 0
            check_expected_version(append.stream_id, append.expected_version, current)
            plans.append((append, current))
        now = self._clock.now()
        results = []
        for plan in plans:
            if isinstance(plan, AppendResult):
                results.append(plan)
                continue
            append, current = plan
            stream = self._streams.setdefault(append.stream_id, _Stream())
            for offset, event in enumerate(append.events, start=1):
                row = Row(
                    event.event_id,
                    append.stream_id,
                    current + offset,
                    self._next_position,
                    now,
                    event.event_type,
                    event.event_version,
                    event.data,
                    event.metadata,
                )
                self._next_position += 1
                stream.rows.append(row)
                self._log.append(row)
                self._positions.append(row.global_position)
                self._ids[event.event_id] = StoredId(
                    row.stream_id, row.stream_version, row.global_position
                )
            last = stream.rows[-1]
            results.append(
                AppendResult(
                    stream_id=append.stream_id,
                    stream_version=last.stream_version,
                    global_position=last.global_position,
                )
            )
        return results

    def _live_stream(self, stream_id: str) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.deleted:
            raise StreamDeleted(stream_id, hard=stream.deleted == "hard")
        return stream

    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        stream = self._live_stream(stream_id)
        if stream is None:
            return []
        rows = stream.rows
        if backwards:
            end = len(rows) if from_version is None else max(0, min(from_version, len(rows)))
            start = 0 if limit is None else max(0, end - limit)
            return rows[start:end][::-1]
        start = 0 if from_version is None else max(0, from_version - 1)
        end = len(rows) if limit is None else start + limit
        return rows[start:end]

    async def _read_all(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        index = bisect.bisect_right(self._positions, after)
        window = self._log[index : index + limit]
        scanned_to = window[-1].global_position if len(window) == limit else None
        return list(_matching(window, event_types, stream_prefix)), scanned_to

    async def _stream_version(self, stream_id: str) -> int:
        stream = self._streams.get(stream_id)
        return 0 if stream is None or stream.deleted else len(stream.rows)

    async def _delete_stream(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.deleted == "hard":
            return
        check_expected_version(stream_id, expected, len(stream.rows) if stream else 0)
        stream = self._streams.setdefault(stream_id, _Stream())
        if not hard:
            stream.deleted = stream.deleted or "soft"
            return
        erased = {row.event_id for row in stream.rows}
        self._log = [row for row in self._log if row.event_id not in erased]
        self._positions = [row.global_position for row in self._log]
        for event_id in erased:
            del self._ids[event_id]
        stream.rows = []
        stream.metadata = None
        stream.deleted = "hard"
        self._snapshots.pop(stream_id, None)

    async def _get_stream_metadata(self, stream_id: str) -> bytes | None:
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.metadata

    async def _set_stream_metadata(self, stream_id: str, metadata: bytes) -> None:
        stream = self._streams.setdefault(stream_id, _Stream())
        if stream.deleted == "hard":
            raise StreamDeleted(stream_id, hard=True)
        stream.metadata = metadata

    async def _save_snapshot(
        self, stream_id: str, version: int, event_type: str, event_version: int, data: bytes
    ) -> None:
        self._live_stream(stream_id)
        self._snapshots.setdefault(stream_id, {})[version] = (event_type, event_version, data)

    async def _load_snapshot(
        self, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        snapshots = self._snapshots.get(stream_id, {})
        fitting = [v for v in snapshots if at_or_below is None or v <= at_or_below]
        if not fitting:
            return None
        version = max(fitting)
        return (version, *snapshots[version])

    async def _load_checkpoint(self, consumer: str) -> int | None:
        return self._checkpoints.get(consumer)

    async def _save_checkpoint(self, consumer: str, position: int) -> None:
        self._checkpoints[consumer] = position


def _matching(
    rows: Iterable[Row], event_types: tuple[str, ...] | None, stream_prefix: str | None
) -> Iterable[Row]:
    for row in rows:
        if event_types is not None and row.event_type not in event_types:
            continue
        if stream_prefix is not None and not row.stream_id.startswith(stream_prefix):
            continue
        yield row
