"""Errors raised by uno.event_sourcing.

::

    EventSourcingError                  event_sourcing.error
    ├── HandlerDefinitionError          event_sourcing.invalid_handler
    ├── UnhandledEvent                  event_sourcing.unhandled_event
    ├── InvariantViolation              event_sourcing.invariant_violated
    ├── AggregateNotFound               event_sourcing.aggregate_not_found
    ├── ConcurrencyConflict             event_sourcing.concurrency_conflict
    ├── UnitOfWorkError                 event_sourcing.unit_of_work
    ├── ProjectionConfigurationError    event_sourcing.invalid_projection
    ├── UnknownProjection               event_sourcing.unknown_projection
    ├── ProjectionFailed                event_sourcing.projection_failed
    ├── CatchUpTimeout                  event_sourcing.catch_up_timeout
    ├── ProcessEnded                    event_sourcing.process_ended
    └── ProcessManagerFailed            event_sourcing.process_manager_failed

Errors of the event store itself (``WrongExpectedVersion``, ``StreamDeleted``,
``StoreUnavailable``...) come from ``uno.events.exceptions``; a repository turns
a ``WrongExpectedVersion`` on save into ``ConcurrencyConflict``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AggregateNotFound",
    "CatchUpTimeout",
    "ConcurrencyConflict",
    "EventSourcingError",
    "HandlerDefinitionError",
    "InvariantViolation",
    "ProcessEnded",
    "ProcessManagerFailed",
    "ProjectionConfigurationError",
    "ProjectionFailed",
    "UnhandledEvent",
    "UnitOfWorkError",
    "UnknownProjection",
]


class EventSourcingError(Exception):
    """The root of every error uno.event_sourcing raises."""

    code: ClassVar[str] = "event_sourcing.error"


class HandlerDefinitionError(EventSourcingError, TypeError):
    """A handler method (``@applies``, ``@handles``) is declared in a way uno cannot bind."""

    code = "event_sourcing.invalid_handler"


class UnhandledEvent(EventSourcingError, LookupError):
    """An aggregate was given an event it has no ``@applies`` method for."""

    code = "event_sourcing.unhandled_event"

    def __init__(self, owner: str, event_type: str) -> None:
        self.owner = owner
        self.event_type = event_type
        super().__init__(
            f"{owner} has no handler for {event_type!r}: add a method decorated with "
            f"@applies that takes it (events in a stream must all be applied)"
        )


class InvariantViolation(EventSourcingError, ValueError):
    """A command was refused because it would break a business rule.

    Raise it (or a subclass with its own ``code``) from an aggregate's command
    methods; nothing is recorded.
    """

    code = "event_sourcing.invariant_violated"


class AggregateNotFound(EventSourcingError, LookupError):
    """No aggregate is stored under the id (or the stream was deleted)."""

    code = "event_sourcing.aggregate_not_found"

    def __init__(self, aggregate: str, aggregate_id: str) -> None:
        self.aggregate = aggregate
        self.aggregate_id = aggregate_id
        super().__init__(
            f"No {aggregate} with id {aggregate_id!r}: create it first "
            "(repository.create or unit_of_work.add), or check the id"
        )


class ConcurrencyConflict(EventSourcingError):
    """Someone saved the aggregate after it was loaded; nothing was written.

    Attributes:
        stream_id: The aggregate's stream.
        expected_version: The version the aggregate was loaded at.
        actual_version: The stream's version now (``None`` if unknown).
    """

    code = "event_sourcing.concurrency_conflict"

    def __init__(self, stream_id: str, expected_version: int, actual_version: int | None) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"{stream_id!r} was loaded at version {expected_version} but is now at "
            f"{actual_version if actual_version is not None else 'another version'}: "
            "nothing was saved; load it again and retry the command"
        )


class UnitOfWorkError(EventSourcingError, RuntimeError):
    """A unit of work was used out of order (committed twice, an aggregate added twice...)."""

    code = "event_sourcing.unit_of_work"


class ProjectionConfigurationError(EventSourcingError, TypeError):
    """A projection or a projection runner is declared or configured in a way that cannot run."""

    code = "event_sourcing.invalid_projection"


class UnknownProjection(EventSourcingError, LookupError):
    """A runner was asked about a projection it does not run."""

    code = "event_sourcing.unknown_projection"

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"This runner runs no projection named {name!r}; it runs {', '.join(known) or 'none'}"
            " (check the projection's name attribute)"
        )


class ProjectionFailed(EventSourcingError, RuntimeError):
    """A projection's handler failed and its policy stopped it.

    The checkpoint stays before the failing event. Attributes name the
    projection and the event; ``__cause__`` is the handler's exception.
    """

    code = "event_sourcing.projection_failed"

    def __init__(self, projection: str, position: int, event_id: str, error: BaseException) -> None:
        self.projection = projection
        self.position = position
        self.event_id = event_id
        super().__init__(
            f"Projection {projection!r} stopped at the event at global position {position} "
            f"(id {event_id}): {type(error).__name__}: {error}. Fix the handler and restart "
            "the runner, or use a Retry or Skip policy"
        )


class CatchUpTimeout(EventSourcingError, TimeoutError):
    """Projections did not reach the end of the log within the time given."""

    code = "event_sourcing.catch_up_timeout"

    def __init__(self, timeout: float, behind: list[str]) -> None:
        self.timeout = timeout
        self.behind = behind
        super().__init__(
            f"Projections {', '.join(behind)} did not catch up within {timeout}s: check their "
            "status (lag, state) or wait longer"
        )


class ProcessEnded(EventSourcingError, RuntimeError):
    """A process manager that completed or failed was asked to record, send or schedule."""

    code = "event_sourcing.process_ended"

    def __init__(self, stream_id: str, action: str) -> None:
        self.stream_id = stream_id
        super().__init__(
            f"Process {stream_id!r} has ended and cannot {action}: check is_ended in the "
            "handler, or start a new process"
        )


class ProcessManagerFailed(EventSourcingError, RuntimeError):
    """A process manager's handler, or sending one of its commands, failed; its runner stopped.

    The runner's checkpoint stays before the event, so a restarted runner
    delivers it again (commands already decided are resent with the same ids).
    Attributes name the manager and the event; ``__cause__`` is the error.
    """

    code = "event_sourcing.process_manager_failed"

    def __init__(self, manager: str, position: int, event_id: str, error: BaseException) -> None:
        self.manager = manager
        self.position = position
        self.event_id = event_id
        super().__init__(
            f"Process manager {manager} stopped at the event at global position {position} "
            f"(id {event_id}): {type(error).__name__}: {error}. Fix the cause and restart "
            "the runner: it resumes at that event"
        )
