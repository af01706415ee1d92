"""What holds the read fence back: for health checks, the ``uno`` command and a log warning."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["FenceStatus", "FenceWatch"]

logger = logging.getLogger("uno.event_storage.postgres")


@dataclass(frozen=True, slots=True)
class FenceStatus:
    """Where the read fence stands, and which append in flight holds it there.

    Readers of the global log read below ``position``. ``held`` says that
    committed events wait at or above it, behind the oldest append still in
    flight, whose backend is ``pid``. An append that commits quickly holds
    readers for milliseconds; one left open (a long unit of work, a session
    idle in transaction) holds every subscriber, projection and relay of
    this store until it ends: end it, or ``pg_terminate_backend(pid)``.
    Transactions that append nothing to this store never hold it.

    Attributes:
        position: The fence: readers read positions below it.
        held: Committed events wait at or above the fence.
        pid: The backend of the oldest append in flight, ``None`` when there is none.
        state: That backend's ``pg_stat_activity.state`` (``"idle in transaction"``...).
        transaction_started: When its transaction began.
        transaction_age: Seconds since then.
        query_started: When its current or last statement began.
    """

    position: int
    held: bool
    pid: int | None = None
    state: str | None = None
    transaction_started: datetime | None = None
    transaction_age: float | None = None
    query_started: datetime | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FenceStatus:
        """Build it from the ``fence_status`` statement's row."""
        position, pid, state, started, query_started, age, waiting = row
        return cls(
            position=int(position),
            held=bool(waiting) and pid is not None,
            pid=pid,
            state=state,
            transaction_started=started,
            transaction_age=age,
            query_started=query_started,
        )


class FenceWatch:
    """Decides when to look at the fence again, and warns about a long hold (once per holder).

    The store asks it whenever a subscription waits for events; it looks at
    most once per ``after`` seconds.
    """

    __slots__ = ("_after", "_next", "_warned")

    def __init__(self, after: float | None) -> None:
        self._after = after
        self._next = 0.0
        self._warned: tuple[int | None, datetime | None] | None = None

    def due(self, now: float) -> bool:
        """Whether to look now (and if so, not again before ``after`` seconds)."""
        if self._after is None or now < self._next:
            return False
        self._next = now + self._after
        return True

    def saw(self, status: FenceStatus, schema: str) -> None:
        """Log a warning when ``status`` shows readers held for longer than ``after``."""
        if self._after is None:
            return
        if not status.held or (status.transaction_age or 0.0) < self._after:
            self._warned = None
            return
        holder = (status.pid, status.transaction_started)
        if holder == self._warned:
            return
        self._warned = holder
        logger.warning(
            "readers of event store %r are held at position %d by backend %s, %s for %.1f s: "
            "end that transaction (or pg_terminate_backend(%s)) to let them go on",
            schema,
            status.position,
            status.pid,
            status.state,
            status.transaction_age or 0.0,
            status.pid,
            extra={
                "schema": schema,
                "pid": status.pid,
                "fence_position": status.position,
                "transaction_age": status.transaction_age,
            },
        )
