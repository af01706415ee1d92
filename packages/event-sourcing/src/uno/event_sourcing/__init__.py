"""Aggregates, repositories, unit of work, projections and process managers for uno.

::

    from uno.event_sourcing import Aggregate, Repository, applies

    class Account(Aggregate):
        def __init__(self, aggregate_id: str) -> None:
            super().__init__(aggregate_id)
            self.balance = 0

        def deposit(self, amount: int) -> None:
            self.record(Deposited(amount=amount))

        @applies
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

    accounts = Repository(store, Account)
    account = await accounts.get("a-1")
    account.deposit(10)
    await accounts.save(account)
"""

from uno.event_sourcing import exceptions
from uno.event_sourcing._aggregate import Aggregate, applies
from uno.event_sourcing._deadlines import DeadlineReached, DeadlineScheduler
from uno.event_sourcing._parking import ParkedReplay, ProjectionEventParked
from uno.event_sourcing._partitions import partition_of
from uno.event_sourcing._policies import FailurePolicy, Retry, Skip, Stop
from uno.event_sourcing._process_manager import ProcessManager, on_deadline, starts
from uno.event_sourcing._process_runner import ProcessManagerRunner
from uno.event_sourcing._projection import Projection, TransactionalProjection, handles
from uno.event_sourcing._registration import register_types
from uno.event_sourcing._repository import Repository
from uno.event_sourcing._runner import ProjectionRunner, ProjectionStatus
from uno.event_sourcing._snapshots import (
    AggregateSnapshot,
    EveryNEvents,
    SnapshotPolicy,
    SnapshotWhen,
)
from uno.event_sourcing._unit_of_work import UnitOfWork
from uno.event_sourcing._worker import ProjectionState
from uno.event_sourcing.exceptions import (
    AggregateNotFound,
    CatchUpTimeout,
    ConcurrencyConflict,
    EventSourcingError,
    InvariantViolation,
    ProcessEnded,
    ProcessManagerFailed,
    ProjectionFailed,
    UnhandledEvent,
    UnknownProjection,
)

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "AggregateSnapshot",
    "CatchUpTimeout",
    "ConcurrencyConflict",
    "DeadlineReached",
    "DeadlineScheduler",
    "EventSourcingError",
    "EveryNEvents",
    "FailurePolicy",
    "InvariantViolation",
    "ParkedReplay",
    "ProcessEnded",
    "ProcessManager",
    "ProcessManagerFailed",
    "ProcessManagerRunner",
    "Projection",
    "ProjectionEventParked",
    "ProjectionFailed",
    "ProjectionRunner",
    "ProjectionState",
    "ProjectionStatus",
    "Repository",
    "Retry",
    "Skip",
    "SnapshotPolicy",
    "SnapshotWhen",
    "Stop",
    "TransactionalProjection",
    "UnhandledEvent",
    "UnitOfWork",
    "UnknownProjection",
    "applies",
    "exceptions",
    "handles",
    "on_deadline",
    "partition_of",
    "register_types",
    "starts",
]
