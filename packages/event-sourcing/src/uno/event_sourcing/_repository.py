"""Repositories: load aggregates from their streams and save what they recorded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import EllipsisType
from typing import Generic, TypeVar, cast

from uno.event_sourcing._aggregate import Aggregate
from uno.event_sourcing._snapshots import SnapshotPolicy, restore, snapshot_of
from uno.event_sourcing.exceptions import AggregateNotFound, ConcurrencyConflict
from uno.events import (
    NO_STREAM,
    AppendResult,
    EventMetadata,
    EventStore,
    NewEvent,
    SnapshotStore,
    StreamAppend,
)
from uno.events.exceptions import StreamDeleted, WrongExpectedVersion

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)

logger = logging.getLogger("uno.event_sourcing")


class Repository(Generic[A]):
    """Loads and saves aggregates of one class through an event store.

    ``Repository(store, Account)``; ``get`` rebuilds an aggregate from its
    latest usable snapshot and the events after it (upcast by the store's
    registry), ``save`` appends what it recorded with the loaded version as the
    expected version, so a concurrent save surfaces as ``ConcurrencyConflict``
    and writes nothing.

    Args:
        store: Any ``EventStore``; snapshots are used when it is also a
            ``SnapshotStore``.
        aggregate: The aggregate class.
        snapshot_policy: Overrides the class's ``snapshot_policy``
            (``None`` turns snapshots off for this repository).
    """

    def __init__(
        self,
        store: EventStore,
        aggregate: type[A],
        *,
        snapshot_policy: SnapshotPolicy | EllipsisType | None = ...,
    ) -> None:
        self.store = store
        self.aggregate = aggregate
        policy = aggregate.snapshot_policy if snapshot_policy is ... else snapshot_policy
        snapshots = isinstance(store, SnapshotStore) and aggregate.supports_snapshots()
        if policy is not None and not aggregate.supports_snapshots():
            raise TypeError(
                f"{aggregate.__qualname__} has a snapshot policy but no snapshots: set "
                "snapshot_type and define to_snapshot() and from_snapshot()"
            )
        self.snapshot_policy = policy if snapshots else None
        self._snapshots = store if snapshots else None

    async def get(self, aggregate_id: str, *, version: int | None = None) -> A:
        """Return the aggregate as stored, or as it was at ``version``.

        Raises:
            AggregateNotFound: nothing is stored under the id (or, with
                ``version``, the stream is shorter), or the stream was deleted.
        """
        if version is not None and version < 1:
            raise ValueError(f"version must be >= 1, got {version}")
        cls = self.aggregate
        stream_id = cls.stream_id_for(aggregate_id)
        aggregate: Aggregate | None = None
        if self._snapshots is not None:
            snapshot = await cast(SnapshotStore, self._snapshots).load_snapshot(
                stream_id, at_or_below=version
            )
            if snapshot is not None:
                aggregate = restore(cls, aggregate_id, snapshot)
        start = 1 if aggregate is None else aggregate.version + 1
        limit = None if version is None else version - start + 1
        try:
            recorded = (
                await self.store.read_stream(stream_id, from_version=start, limit=limit)
                if limit is None or limit > 0
                else []
            )
        except StreamDeleted:
            raise AggregateNotFound(cls.__qualname__, aggregate_id) from None
        if aggregate is None:
            if not recorded:
                raise AggregateNotFound(cls.__qualname__, aggregate_id)
            aggregate = cls(aggregate_id)
        if (
            version is not None
            and (recorded[-1].stream_version if recorded else start - 1) < version
        ):
            raise AggregateNotFound(cls.__qualname__, f"{aggregate_id}@{version}")
        if recorded:
            aggregate.replay([r.data for r in recorded], version=recorded[-1].stream_version)
        return cast(A, aggregate)

    async def exists(self, aggregate_id: str) -> bool:
        """Return whether an aggregate is stored under the id."""
        return (
            await self.store.stream_version(self.aggregate.stream_id_for(aggregate_id)) is not None
        )

    async def save(
        self, aggregate: A, *, metadata: EventMetadata | None = None
    ) -> AppendResult | None:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        A new aggregate (loaded version 0) is created with ``NO_STREAM``. Returns
        ``None`` when there was nothing to save. ``metadata`` applies to every
        event recorded without its own.

        Raises:
            ConcurrencyConflict: the stream moved since the aggregate was
                loaded (or, for a new one, already exists); nothing was written.
        """
        append = pending_append(aggregate, metadata)
        if append is None:
            return None
        try:
            result = await self.store.append(
                append.stream_id, append.events, expected_version=append.expected_version
            )
        except WrongExpectedVersion as exc:
            raise ConcurrencyConflict(exc.stream_id, aggregate.loaded_version, exc.actual) from exc
        previous = aggregate.loaded_version
        aggregate.mark_saved(result.stream_version)
        await self.snapshot_if_due(aggregate, previous)
        return result

    async def snapshot_if_due(self, aggregate: Aggregate, previous_version: int) -> bool:
        """Store a snapshot if the policy asks for one; return whether it did.

        A failed snapshot is logged, not raised: the events are saved already,
        and the next load replays them.
        """
        policy = self.snapshot_policy
        if policy is None or not policy.should_snapshot(aggregate, previous_version):
            return False
        try:
            await cast(SnapshotStore, self._snapshots).save_snapshot(snapshot_of(aggregate))
        except Exception:
            logger.warning("could not save a snapshot of %s", aggregate.stream_id, exc_info=True)
            return False
        return True

    async def save_snapshot(self, aggregate: A) -> None:
        """Store a snapshot of the aggregate now, whatever the policy.

        The aggregate must have no pending events: save it first.
        """
        if self._snapshots is None:
            raise TypeError(
                f"{self.aggregate.__qualname__} snapshots need a SnapshotStore and "
                "snapshot_type, to_snapshot() and from_snapshot() on the class"
            )
        if aggregate.pending_events:
            raise ValueError("save the aggregate before snapshotting it")
        await cast(SnapshotStore, self._snapshots).save_snapshot(snapshot_of(aggregate))


def pending_append(aggregate: Aggregate, metadata: EventMetadata | None) -> StreamAppend | None:
    """Return the append that stores the aggregate's pending events, or ``None``."""
    pending: Sequence[NewEvent] = aggregate.pending_events
    if not pending:
        return None
    if metadata is not None:
        default = EventMetadata()
        pending = [
            NewEvent(data=e.data, metadata=metadata, event_id=e.event_id)
            if e.metadata == default
            else e
            for e in pending
        ]
    loaded = aggregate.loaded_version
    return StreamAppend(
        stream_id=aggregate.stream_id,
        events=pending,
        expected_version=loaded or NO_STREAM,
    )
