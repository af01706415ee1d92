"""Deadlines: timeouts a process manager schedules, stored as events, fired exactly once.

A process manager records ``DeadlineScheduled`` (and ``DeadlineCancelled``) in
its own stream. A ``DeadlineScheduler`` rebuilds the pending deadlines from
the global log when it starts, learns of new ones as they are stored, and,
once the clock passes a deadline, appends ``DeadlineReached`` to the manager's
stream with an event id derived from the deadline's id: appending it twice
(after a restart, or from two schedulers) stores it once, so a deadline fires
exactly once. The process manager runner then delivers it like any event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from uno.events import Clock, Event, EventMetadata, EventStore, NewEvent, RecordedEvent

__all__ = [
    "DEADLINE_TYPES",
    "DeadlineCancelled",
    "DeadlineReached",
    "DeadlineScheduled",
    "DeadlineScheduler",
    "PendingDeadline",
]

logger = logging.getLogger("uno.event_sourcing.process_managers")

_DEADLINE_NAMESPACE = uuid.UUID("5d0c3b7e-3f0a-4a53-9a43-3a4a2b8f0d11")


class DeadlineScheduled(Event):
    """A process manager asked to be woken at ``due_at`` (recorded in its stream).

    Attributes:
        deadline_id: Unique id of this scheduling (a rescheduled name gets a new one).
        name: The name ``@on_deadline`` handlers are bound to.
        due_at: When it is due (timezone-aware, UTC).
        payload: A JSON-like value handed back when the deadline is reached.
    """

    event_type = "uno.DeadlineScheduled"

    deadline_id: str
    name: str
    due_at: datetime
    payload: Any = None


class DeadlineCancelled(Event):
    """A process manager cancelled a deadline (or ended with it pending)."""

    event_type = "uno.DeadlineCancelled"

    deadline_id: str
    name: str


class DeadlineReached(Event):
    """A deadline's time came; appended to the manager's stream by the scheduler.

    ``@on_deadline(name)`` handlers receive it, unless the deadline was
    cancelled before it was reached.
    """

    event_type = "uno.DeadlineReached"

    deadline_id: str
    name: str
    due_at: datetime
    payload: Any = None


DEADLINE_EVENTS: tuple[type[Event], ...] = (DeadlineScheduled, DeadlineCancelled, DeadlineReached)
DEADLINE_TYPES = frozenset(cls.event_type for cls in DEADLINE_EVENTS)


def reached_event_id(deadline_id: str) -> uuid.UUID:
    """Return the event id of the ``DeadlineReached`` of a deadline (the same every time)."""
    return uuid.uuid5(_DEADLINE_NAMESPACE, deadline_id)


@dataclass(frozen=True)
class PendingDeadline:
    """A deadline the scheduler waits for.

    Attributes:
        stream_id: The process manager's stream, where ``DeadlineReached`` goes.
        deadline_id, name, due_at, payload: As scheduled.
        correlation_id: The correlation id of the scheduling, carried over.
        causation_id: The id of the ``DeadlineScheduled`` event.
    """

    stream_id: str
    deadline_id: str
    name: str
    due_at: datetime
    payload: Any
    correlation_id: str | None
    causation_id: str


class DeadlineScheduler:
    """Keeps the pending deadlines of some stream categories and fires them when due.

    ``rebuild()`` reads every deadline event of the log once (filtered by type),
    ``observe(event)`` keeps the set current from a subscription, and
    ``fire_due()`` appends ``DeadlineReached`` for each deadline the clock has
    passed. Time comes only from ``clock``: with a ``ManualClock``, a test
    advances the clock and calls ``fire_due()``, without sleeping.
    ``ProcessManagerRunner`` runs one; use it alone only to fire deadlines
    from another process than the one that handles them.

    Args:
        store: The event store.
        clock: Where the time comes from.
        categories: Only deadlines of streams ``"<category>-..."`` are kept
            (``None``: all of them).
    """

    def __init__(
        self, store: EventStore, clock: Clock, *, categories: Collection[str] | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self._prefixes = None if categories is None else tuple(f"{c}-" for c in categories)
        self._pending: dict[str, PendingDeadline] = {}
        self._seen_to = 0

    @property
    def pending(self) -> list[PendingDeadline]:
        """The pending deadlines, soonest first."""
        return sorted(self._pending.values(), key=lambda d: d.due_at)

    def next_due(self) -> datetime | None:
        """Return when the soonest pending deadline is due, or ``None``."""
        return min((d.due_at for d in self._pending.values()), default=None)

    async def rebuild(self) -> None:
        """Rebuild the pending deadlines from every deadline event in the log."""
        self._pending.clear()
        self._seen_to = 0
        end = await self.store.log_position()
        async for event in self.store.read_all(event_types=DEADLINE_TYPES):
            if event.global_position > end:
                break
            self._take(event)
        self._seen_to = end

    def observe(self, event: RecordedEvent[Event]) -> bool:
        """Take a deadline event from a subscription; return whether the pending set changed.

        Events at or before the position ``rebuild`` read up to are ignored:
        they are counted already.
        """
        if event.global_position <= self._seen_to or event.event_type not in DEADLINE_TYPES:
            return False
        return self._take(event)

    def _take(self, event: RecordedEvent[Event]) -> bool:
        if self._prefixes is not None and not event.stream_id.startswith(self._prefixes):
            return False
        data = event.data
        if isinstance(data, DeadlineScheduled):
            self._pending[data.deadline_id] = PendingDeadline(
                stream_id=event.stream_id,
                deadline_id=data.deadline_id,
                name=data.name,
                due_at=data.due_at,
                payload=data.payload,
                correlation_id=event.metadata.correlation_id or str(event.event_id),
                causation_id=str(event.event_id),
            )
            return True
        if isinstance(data, DeadlineCancelled | DeadlineReached):
            return self._pending.pop(data.deadline_id, None) is not None
        return False

    async def fire_due(self) -> int:
        """Append ``DeadlineReached`` for every deadline due by the clock; return how many.

        Each append uses the deadline's own event id, so firing again (this
        scheduler after a crash, or another one) stores nothing more. A
        deadline whose append fails stays pending and is tried at the next call.
        """
        now = self.clock.now()
        due = [d for d in self.pending if d.due_at <= now]
        fired = 0
        for deadline in due:
            reached = DeadlineReached(
                deadline_id=deadline.deadline_id,
                name=deadline.name,
                due_at=deadline.due_at,
                payload=deadline.payload,
            )
            metadata = EventMetadata(
                correlation_id=deadline.correlation_id, causation_id=deadline.causation_id
            )
            try:
                await self.store.append(
                    deadline.stream_id,
                    [
                        NewEvent(
                            data=reached,
                            metadata=metadata,
                            event_id=reached_event_id(deadline.deadline_id),
                        )
                    ],
                )
            except Exception:
                logger.exception(
                    "could not store a reached deadline; it is tried again",
                    extra={"stream_id": deadline.stream_id, "deadline": deadline.name},
                )
                continue
            self._pending.pop(deadline.deadline_id, None)
            fired += 1
        return fired
