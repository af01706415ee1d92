"""Snapshot policies, and how an aggregate's state is stored as a snapshot."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from uno.events import Event, Snapshot

if TYPE_CHECKING:
    from uno.event_sourcing._aggregate import Aggregate

__all__ = ["AggregateSnapshot", "EveryNEvents", "SnapshotPolicy", "SnapshotWhen"]


class SnapshotPolicy(abc.ABC):
    """Decides, after a save, whether to store a snapshot of the aggregate."""

    @abc.abstractmethod
    def should_snapshot(self, aggregate: Aggregate, previous_version: int) -> bool:
        """Return whether to snapshot ``aggregate``, just saved from ``previous_version``."""


class EveryNEvents(SnapshotPolicy):
    """Snapshot whenever a save crosses a multiple of ``n`` events (versions n, 2n, ...)."""

    def __init__(self, n: int) -> None:
        given: object = n
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ValueError(f"EveryNEvents needs an int n >= 1, got {n!r}")
        self.n = n

    def should_snapshot(self, aggregate: Aggregate, previous_version: int) -> bool:
        """Return whether ``previous_version`` and the new version straddle a multiple of n."""
        return aggregate.version // self.n > previous_version // self.n

    def __repr__(self) -> str:
        return f"EveryNEvents({self.n})"


class SnapshotWhen(SnapshotPolicy):
    """Snapshot when ``predicate(aggregate, previous_version)`` returns ``True``."""

    def __init__(self, predicate: Callable[[Aggregate, int], bool]) -> None:
        self.predicate = predicate

    def should_snapshot(self, aggregate: Aggregate, previous_version: int) -> bool:
        """Return the predicate's answer."""
        return self.predicate(aggregate, previous_version)


class AggregateSnapshot(Event):
    """The stored form of an aggregate's snapshot (register it: ``register_types``).

    ``snapshot_version`` is the aggregate class's version of its snapshot
    shape; a snapshot of another version is ignored on load.
    """

    event_type = "uno.AggregateSnapshot"

    aggregate_type: str
    snapshot_version: int
    state: bytes


def snapshot_of(aggregate: Aggregate) -> Snapshot:
    """Return the snapshot of ``aggregate`` at its current version."""
    cls = type(aggregate)
    return Snapshot(
        stream_id=aggregate.stream_id,
        stream_version=aggregate.version,
        state=AggregateSnapshot(
            aggregate_type=cls.__qualname__,
            snapshot_version=cls.snapshot_version,
            state=msgspec.msgpack.encode(aggregate.to_snapshot()),
        ),
    )


def restore(cls: type[Aggregate], aggregate_id: str, snapshot: Snapshot) -> Aggregate | None:
    """Return the aggregate rebuilt from ``snapshot``, or ``None`` if the snapshot does not fit.

    A snapshot fits when it was taken by the same aggregate class at its
    current ``snapshot_version``; anything else (an older shape, another
    class) is ignored, never misread.
    """
    stored = snapshot.state
    if (
        not isinstance(stored, AggregateSnapshot)
        or stored.aggregate_type != cls.__qualname__
        or stored.snapshot_version != cls.snapshot_version
        or cls.snapshot_type is None
    ):
        return None
    state: Any = msgspec.msgpack.decode(stored.state, type=cls.snapshot_type)
    aggregate = cls.from_snapshot(aggregate_id, state)
    aggregate.mark_saved(snapshot.stream_version)
    return aggregate
