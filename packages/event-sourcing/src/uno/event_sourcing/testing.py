"""Testing helpers: given/when/then for aggregates, and an in-memory event store.

::

    from uno.event_sourcing.testing import given

    def test_a_withdrawal_beyond_the_balance_is_refused() -> None:
        given(Account, Opened(owner="ada"), Deposited(amount=10)).when(
            lambda account: account.withdraw(50)
        ).then_raises(InvariantViolation, match="balance")

``memory_store`` needs uno-event-storage: ``pip install 'uno-event-sourcing[testing]'``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from uno.event_sourcing._aggregate import Aggregate
from uno.event_sourcing._registration import register_types
from uno.events import Event, EventRegistry

if TYPE_CHECKING:
    from uno.events import EventStore

__all__ = ["AggregateScenario", "given", "memory_store"]

A = TypeVar("A", bound=Aggregate)
E = TypeVar("E", bound=BaseException)


def given(aggregate: type[A], *events: Event, aggregate_id: str = "test") -> AggregateScenario[A]:
    """Start a scenario: an aggregate of class ``aggregate`` that has already seen ``events``.

    With no events the aggregate is new; a creation command given to ``when``
    may return the aggregate it created instead.
    """
    subject = aggregate(aggregate_id)
    if events:
        subject.replay(events)
    return AggregateScenario(subject)


class AggregateScenario(Generic[A]):
    """One given/when/then check of an aggregate's behaviour, with no store involved."""

    def __init__(self, aggregate: A) -> None:
        self.aggregate = aggregate
        self._error: BaseException | None = None
        self._ran = False

    def when(self, command: Callable[[A], object]) -> AggregateScenario[A]:
        """Run ``command(aggregate)``; an exception it raises is kept for ``then_raises``.

        If the command returns an aggregate of the same class (a factory such
        as ``Account.open(...)``), that aggregate becomes the subject.
        """
        try:
            result = command(self.aggregate)
        except Exception as exc:  # kept for then_raises; then() re-raises it
            self._error = exc
        else:
            if isinstance(result, type(self.aggregate)):
                self.aggregate = result
        self._ran = True
        return self

    def then(self, *expected: Event) -> A:
        """Assert the command recorded exactly ``expected``, in order; return the aggregate.

        Raises:
            AssertionError: the command raised, or recorded other events.
        """
        self._require_ran()
        if self._error is not None:
            raise AssertionError(
                f"expected events {list(expected)!r}, but the command raised {self._error!r}"
            ) from self._error
        recorded = [e.data for e in self.aggregate.pending_events]
        if recorded != list(expected):
            raise AssertionError(
                f"expected the command to record {list(expected)!r}, it recorded {recorded!r}"
            )
        return self.aggregate

    def then_raises(self, error: type[E], *, match: str | None = None) -> E:
        """Assert the command raised ``error`` and recorded nothing.

        ``match`` is a regular expression the error's message must contain.
        """
        self._require_ran()
        if self._error is None:
            raise AssertionError(
                f"expected {error.__name__}, but the command succeeded and recorded "
                f"{[e.data for e in self.aggregate.pending_events]!r}"
            )
        if not isinstance(self._error, error):
            raise AssertionError(  # noqa: TRY004 - a failed check is an AssertionError
                f"expected {error.__name__}, the command raised {self._error!r}"
            ) from self._error
        if match is not None and not re.search(match, str(self._error)):
            raise AssertionError(f"{self._error!r} does not match {match!r}")
        if self.aggregate.pending_events:
            raise AssertionError(
                "the command raised but left recorded events behind: "
                f"{[e.data for e in self.aggregate.pending_events]!r}"
            )
        return self._error

    def _require_ran(self) -> None:
        if not self._ran:
            raise AssertionError("call .when(command) before .then(...)")


@asynccontextmanager
async def memory_store(registry: EventRegistry, **options: Any) -> AsyncIterator[EventStore]:
    """Open an empty in-memory event store (with uno.event_sourcing's own events registered)."""
    try:
        from uno.event_storage import open_event_store  # noqa: PLC0415 - optional dependency
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "memory_store needs uno-event-storage: pip install 'uno-event-sourcing[testing]'"
        ) from exc
    async with open_event_store("memory://", registry=register_types(registry), **options) as store:
        yield store
