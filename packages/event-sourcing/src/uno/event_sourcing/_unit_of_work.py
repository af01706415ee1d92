"""Unit of work: save several aggregates and their inline read models atomically."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from uno.event_sourcing._aggregate import Aggregate
from uno.event_sourcing._repository import Repository, pending_append
from uno.event_sourcing.exceptions import ConcurrencyConflict, UnitOfWorkError
from uno.events import (
    AppendResult,
    Event,
    EventHandler,
    EventMetadata,
    EventStore,
    RecordedEvent,
    StreamAppend,
    TransactionalEventStore,
)
from uno.events.exceptions import WrongExpectedVersion

if TYPE_CHECKING:
    from uno.event_sourcing._projection import TransactionalProjection

__all__ = ["UnitOfWork"]

A = TypeVar("A", bound=Aggregate)

logger = logging.getLogger("uno.event_sourcing")


class UnitOfWork:
    """Collects the aggregates one command changed and saves them in one atomic append.

    ::

        async with UnitOfWork(store, projections=[balances]) as uow:
            source = await uow.get(accounts, "a")
            target = await uow.get(accounts, "b")
            source.withdraw(10)
            target.deposit(10)
        # committed here: both streams, and the balances read model, or nothing

    Leaving the block normally commits; leaving it with an exception discards
    the recorded events. ``get`` returns the same instance for the same id
    within a unit of work.

    Args:
        store: The event store.
        projections: Inline projections (``TransactionalProjection``) updated
            from the new events in the same transaction as the append; they
            need a store with transactions (SQLite, PostgreSQL, memory).
        subscribers: Called with each new event after the commit, in order.
            They are best effort: an error is logged, not raised, since the
            events are stored already (use a projection for guaranteed delivery).
        metadata: Applied to every event recorded without its own metadata
            (correlation and causation ids of the command, for instance).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        projections: Sequence[TransactionalProjection] = (),
        subscribers: Sequence[EventHandler] = (),
        metadata: EventMetadata | None = None,
    ) -> None:
        if projections and not isinstance(store, TransactionalEventStore):
            raise UnitOfWorkError(
                f"inline projections need a store with transactions; {type(store).__name__} "
                "has none: run the projections with a ProjectionRunner instead"
            )
        self.store = store
        self.projections = tuple(projections)
        self.subscribers = tuple(subscribers)
        self.metadata = metadata
        self._tracked: dict[str, tuple[Aggregate, Repository[Any] | None]] = {}
        self._state = "open"
        self.results: list[AppendResult] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._state == "open":
            await self.commit()
        elif self._state == "open":
            self.rollback()

    def _check_open(self) -> None:
        if self._state != "open":
            raise UnitOfWorkError(
                f"this unit of work is {self._state}: start a new UnitOfWork for more changes"
            )

    async def get(self, repository: Repository[A], aggregate_id: str) -> A:
        """Load an aggregate through ``repository`` and track it.

        Within one unit of work the same id gives the same object.
        """
        self._check_open()
        stream_id = repository.aggregate.stream_id_for(aggregate_id)
        tracked = self._tracked.get(stream_id)
        if tracked is not None:
            return tracked[0]  # type: ignore[return-value]
        aggregate = await repository.get(aggregate_id)
        self._tracked[stream_id] = (aggregate, repository)
        return aggregate

    def add(self, aggregate: Aggregate, *, repository: Repository[Any] | None = None) -> None:
        """Track an aggregate (typically a new one) to save at commit.

        ``repository`` supplies the snapshot policy; without it the class's
        ``snapshot_policy`` applies.
        """
        self._check_open()
        known = self._tracked.get(aggregate.stream_id)
        if known is not None and known[0] is not aggregate:
            raise UnitOfWorkError(
                f"another instance of {aggregate.stream_id!r} is tracked already: "
                "change the one uow.get returned"
            )
        self._tracked[aggregate.stream_id] = (aggregate, repository)

    def rollback(self) -> None:
        """Discard the unit of work: nothing is saved (the aggregates keep their pending events)."""
        self._state = "rolled back"

    async def commit(self) -> list[AppendResult]:
        """Append every tracked aggregate's pending events atomically, then notify.

        Raises:
            ConcurrencyConflict: one of the streams moved since its aggregate
                was loaded; nothing was written.
        """
        self._check_open()
        self._state = "committing"
        plan = [
            (append, aggregate, repository)
            for aggregate, repository in self._tracked.values()
            if (append := pending_append(aggregate, self.metadata)) is not None
        ]
        if not plan:
            self._state = "committed"
            return []
        appends = [append for append, _, _ in plan]
        try:
            if self.projections:
                results, recorded = await self._commit_with_projections(appends)
            else:
                results = await self.store.append_streams(appends)
                recorded = None
        except WrongExpectedVersion as exc:
            self._state = "failed"
            loaded = next((a.loaded_version for _, a, _ in plan if a.stream_id == exc.stream_id), 0)
            raise ConcurrencyConflict(exc.stream_id, loaded, exc.actual) from exc
        except BaseException:
            self._state = "failed"
            raise
        self._state = "committed"
        self.results = results
        for (_, aggregate, repository), result in zip(plan, results, strict=True):
            previous = aggregate.loaded_version
            aggregate.mark_saved(result.stream_version)
            if repository is None and type(aggregate).snapshot_policy is None:
                continue  # no policy: nothing to decide, no repository to make
            saver = repository or Repository(self.store, type(aggregate))
            await saver.snapshot_if_due(aggregate, previous)
        if self.subscribers:
            if recorded is None:
                recorded = await self._read_back(self.store, appends)
            await self._notify(recorded)
        return results

    async def _commit_with_projections(
        self, appends: list[StreamAppend]
    ) -> tuple[list[AppendResult], list[RecordedEvent[Event]]]:
        assert isinstance(self.store, TransactionalEventStore)
        async with self.store.transaction() as tx:
            results = await tx.append_streams(appends)
            recorded = await self._read_back(tx, appends)
            for projection in self.projections:
                for event in recorded:
                    await projection.apply(event, tx)
        return results, recorded

    @staticmethod
    async def _read_back(
        store: EventStore, appends: list[StreamAppend]
    ) -> list[RecordedEvent[Event]]:
        """Return the events the appends stored, in global order."""
        recorded: list[RecordedEvent[Event]] = []
        for append in appends:
            expected = append.expected_version
            start = expected + 1 if isinstance(expected, int) else 1
            events = await store.read_stream(append.stream_id, from_version=start)
            ids = {e.event_id for e in append.events if not isinstance(e, Event)}
            recorded.extend(e for e in events if e.event_id in ids)
        recorded.sort(key=lambda e: e.global_position)
        return recorded

    async def _notify(self, recorded: list[RecordedEvent[Event]]) -> None:
        for event in recorded:
            for subscriber in self.subscribers:
                try:
                    await subscriber(event)
                except Exception:
                    logger.exception(
                        "subscriber %r failed on event %s at position %d (it was committed)",
                        subscriber,
                        event.event_id,
                        event.global_position,
                    )
