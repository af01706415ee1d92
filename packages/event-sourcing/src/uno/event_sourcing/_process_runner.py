"""The process manager runner: follows the global log, runs the managers, sends their commands."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from uno.event_sourcing._deadlines import DEADLINE_TYPES, DeadlineReached, DeadlineScheduler
from uno.event_sourcing._leasing import StoppableTask, lease_store_of, stop_task_group
from uno.event_sourcing._process_manager import (
    OutgoingCommand,
    ProcessCommandsSent,
    ProcessManager,
)
from uno.event_sourcing._projection import type_names
from uno.event_sourcing._repository import Repository
from uno.event_sourcing.exceptions import (
    AggregateNotFound,
    CatchUpTimeout,
    ConcurrencyConflict,
    HandlerDefinitionError,
    ProcessManagerFailed,
)
from uno.events import (
    CheckpointStore,
    Clock,
    CommandSender,
    Event,
    EventMetadata,
    EventStore,
    Lease,
    LeaseStore,
    RecordedEvent,
    Subscription,
    SystemClock,
)

__all__ = ["ProcessManagerRunner"]

logger = logging.getLogger("uno.event_sourcing.process_managers")


class ProcessManagerRunner:
    """Runs process managers: delivers them events and deadlines, saves them, sends their commands.

    ::

        async with ProcessManagerRunner(store, [TransferProcess], sender=bus) as runner:
            ...  # runs until the block ends

    For each event of the global log, from the runner's checkpoint on (catch
    up, then live), each manager class that handles it finds its process by
    ``correlate`` (creating it only for a ``@starts`` handler), runs the
    handler, saves the process's new events, then sends the commands it asked
    for and records that they were sent. The checkpoint is saved after that.

    Delivery and sending are at least once, and safe to repeat:

    - an event a process handled already (its global position is at or
      before the last one it handled) is ignored;
    - if the runner stopped after saving a process but before sending all of
      its commands, the redelivered event decides the same commands again,
      on the process as it was before the event, and sends them again with
      the same ids (``COMMAND_ID_HEADER``): receivers deduplicate by id;
    - a save that meets a concurrent change of the process
      (``ConcurrencyConflict``) reloads it and handles the event again.

    Deadlines are kept by a ``DeadlineScheduler`` that the runner rebuilds
    from the store when it becomes active, so a deadline that came due while
    no runner ran fires at the next start, once.

    Several runners of one name may run at once, in one process or many, for
    high availability: only the one that holds the lease ``lease_name``
    (``process-managers:<name>``) follows the log and fires deadlines
    (``active``); the others stand by and try to take the lease every
    ``lease_interval`` seconds. The active runner checks its lease as often;
    when it finds it lost, it stops following and firing at once, saves
    nothing more, and stands by. A runner that takes the lease reloads the
    checkpoint and rebuilds its deadlines before it follows the log. A store
    without ``lease_store()`` (and no ``leases=``) gives no leases: the runner
    is active from its start, and two runners of one name must then not run
    at once.

    A handler or a send that raises stops the runner at that event
    (``error``; ``wait_until_caught_up`` raises ``ProcessManagerFailed``);
    it keeps its lease, so no standby takes over; restart it once the cause
    is fixed, and it (or a standby, if it stops) resumes at that event.

    Args:
        store: The event store; it must keep checkpoints (``CheckpointStore``).
        managers: The process manager classes, each with its own category.
        sender: Sends the commands (a ``CommandBus``, or any ``CommandSender``).
        clock: Where time comes from (deadlines, ``ProcessManager.now()``).
        name: Names the runner's checkpoint and lease; runners of one name
            take turns (see above).
        deadline_poll: Longest wait, in seconds, between two looks at the
            clock for due deadlines (a clock may jump, as a test's does).
        checkpoint_every: Save the checkpoint at least every this many events
            that no manager handles (it is saved after every handled one).
        conflict_retries: How many times a concurrent change of a process is
            retried before the runner stops.
        leases: Where the runner's lease is taken; defaults to
            ``store.lease_store()`` when the store has one, else the runner
            runs without a lease.
        lease_interval: Seconds between two checks of the held lease, and
            between two attempts of a standby runner to take it.

    Raises:
        TypeError: the store keeps no checkpoints.
        HandlerDefinitionError: a manager cannot be run (see the message).
        ValueError: ``lease_interval`` is not positive.
    """

    def __init__(
        self,
        store: EventStore,
        managers: Sequence[type[ProcessManager]],
        *,
        sender: CommandSender,
        clock: Clock | None = None,
        name: str = "process-managers",
        deadline_poll: float = 1.0,
        checkpoint_every: int = 100,
        conflict_retries: int = 10,
        leases: LeaseStore | None = None,
        lease_interval: float = 1.0,
    ) -> None:
        if lease_interval <= 0:
            raise ValueError(f"lease_interval must be > 0, got {lease_interval}")
        if not isinstance(store, CheckpointStore):
            raise TypeError(
                f"{type(store).__name__} keeps no checkpoints; a ProcessManagerRunner needs a "
                "store that is also a CheckpointStore (memory, SQLite, PostgreSQL are)"
            )
        categories: dict[str, type[ProcessManager]] = {}
        for cls in managers:
            given: object = cls
            if not (isinstance(given, type) and issubclass(given, ProcessManager)):
                raise HandlerDefinitionError(f"{cls!r} is not a ProcessManager subclass")
            if cls.category in categories:
                raise HandlerDefinitionError(
                    f"{cls.__qualname__} and {categories[cls.category].__qualname__} share the "
                    f"category {cls.category!r}: give each process manager its own"
                )
            overridden = cls.correlate.__func__ is not ProcessManager.correlate.__func__  # type: ignore[attr-defined]
            if cls.correlation_key is None and not overridden and cls.reacted_event_types():
                raise HandlerDefinitionError(
                    f"{cls.__qualname__} cannot tell which process an event belongs to: set "
                    "correlation_key = 'some_id' or override the correlate classmethod"
                )
            categories[cls.category] = cls
        self.store = store
        self.checkpoints: CheckpointStore = store
        self.managers = tuple(managers)
        self.sender = sender
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.name = name
        self.deadline_poll = deadline_poll
        self.checkpoint_every = checkpoint_every
        self.conflict_retries = conflict_retries
        self.lease_name = f"process-managers:{name}"
        self.lease_interval = lease_interval
        self._lease_store = leases if leases is not None else lease_store_of(store)
        self.scheduler = DeadlineScheduler(store, self.clock, categories=list(categories))
        self._repositories: dict[type[ProcessManager], Repository[Any]] = {
            cls: Repository(store, cls) for cls in self.managers
        }
        # The store filters by these: a type no manager reacts to (or this
        # process does not register) is never read, let alone decoded.
        reacted = frozenset().union(*(cls.reacted_event_types() for cls in self.managers))
        self.event_types: frozenset[str] = type_names(reacted) | DEADLINE_TYPES
        self._position = 0
        self._saved = 0
        self._subscription: Subscription | None = None
        self._in_flight = False
        self._error: Exception | None = None
        self._group: TaskGroup | None = None
        self._lease: Lease | None = None
        self._work: StoppableTask | None = None
        self._wakeup = anyio.Event()

    @property
    def position(self) -> int:
        """How far the runner has handled the log: its last event, or past events of other types.

        The store filters out the types no manager reacts to, so the runner
        moves past them without reading them.
        """
        return self._handled()

    @property
    def active(self) -> bool:
        """Whether the runner follows the log and fires deadlines (``False``: it stands by).

        A runner without leases is active from its start to its end; with
        leases, while it holds ``lease_name``.
        """
        return self._work is not None

    @property
    def error(self) -> Exception | None:
        """Why the runner stopped following the log, if it did (a ``ProcessManagerFailed``...)."""
        return self._error

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        try:
            if self._lease_store is None:
                await self._activate()
            else:
                await self._try_to_lead()
                group.start_soon(self._keep_lease, name=f"lease {self.lease_name}")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        try:
            await stop_task_group(group)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if self._work is not None:
                        self._work = None
                        await self._save_checkpoint()
                finally:
                    lease, self._lease = self._lease, None
                    if lease is not None:
                        await lease.release()

    # -- the lease -------------------------------------------------------------

    async def _activate(self) -> None:
        """Start following the log and firing deadlines, from the stored checkpoint."""
        assert self._group is not None
        self._position = self._saved = await self.checkpoints.load_checkpoint(self.name) or 0
        self._error = None
        await self.scheduler.rebuild()
        self._wakeup = anyio.Event()
        work = StoppableTask()
        work.start(self._group, self._run, name=f"process managers {self.name}")
        self._work = work

    async def _run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._follow, name=f"process managers {self.name}")
            group.start_soon(self._watch_deadlines, name=f"deadlines {self.name}")

    async def _try_to_lead(self) -> None:
        """Take the lease if it is free and become active; stay standing by if not."""
        assert self._lease_store is not None
        lease = await self._lease_store.try_acquire(self.lease_name)
        if lease is None:
            return
        self._lease = lease
        try:
            await self._activate()
        except BaseException:
            self._lease = None
            with anyio.CancelScope(shield=True):
                await lease.release()
            raise
        logger.info("took the process manager lease", extra={"runner": self.name})

    async def _keep_lease(self) -> None:
        while True:
            await anyio.sleep(self.lease_interval)
            try:
                if self._lease is None:
                    await self._try_to_lead()
                elif not await self._lease.check():
                    await self._stand_by()
            except Exception:
                logger.exception(
                    "taking or checking the process manager lease failed; trying again",
                    extra={"runner": self.name},
                )

    async def _stand_by(self) -> None:
        """Stop at once after the lease was lost: another runner may hold it already."""
        logger.warning("lost the process manager lease; standing by", extra={"runner": self.name})
        work, self._work = self._work, None
        if work is not None:
            await work.stop()
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def wait_until_caught_up(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until the runner has handled every event stored when it was called.

        A runner that stands by waits until it takes the lease and has
        caught up, within the same ``timeout``.

        Raises:
            ProcessManagerFailed: the runner stopped on a failing event (or
                another error, such as the store's, that stopped it).
            CatchUpTimeout: it did not catch up within ``timeout`` seconds
                (its message says when the runner stood by all along).
        """
        target = await self.store.log_position()
        with anyio.move_on_after(timeout):
            while True:
                if self._work is not None:
                    if self._error is not None:
                        raise self._error
                    if self._handled() >= target:
                        return
                await anyio.sleep(0.01)
        if self._work is None:
            raise CatchUpTimeout(
                timeout,
                [f"process managers {self.name!r} (standing by: another runner holds its lease)"],
            )
        raise CatchUpTimeout(timeout, [f"process managers {self.name!r}"])

    async def fire_due(self) -> int:
        """Fire the deadlines due by the clock now; return how many (the runner then handles them).

        The runner does this by itself at least every ``deadline_poll``
        seconds; call it after moving a test's ``ManualClock``. A runner that
        stands by fires nothing and returns 0: the active one fires them.
        """
        if self._work is None:
            return 0
        return await self.scheduler.fire_due()

    # -- following the log -----------------------------------------------------

    async def _follow(self) -> None:
        try:
            async with self.store.subscribe(
                after=self._position, event_types=self.event_types
            ) as subscription:
                self._subscription = subscription
                async for event in subscription:
                    self._in_flight = True
                    await self._process(event)
                    self._in_flight = False
        except Exception as exc:
            self._error = exc
            logger.exception(
                "the process manager runner stopped",
                extra={"runner": self.name, "position": self._position},
            )

    def _handled(self) -> int:
        """Return how far the log is handled, past the events the store filtered out."""
        # A subscription that filters says how far it read (uno's stores do); the
        # events it read past were not for these managers. Not while one is handled.
        read = getattr(self._subscription, "position", None)
        if self._in_flight or not isinstance(read, int):
            return self._position
        return max(self._position, read)

    async def _process(self, event: RecordedEvent[Event]) -> None:
        if self.scheduler.observe(event):
            self._wakeup.set()
        delivered = False
        for cls in self.managers:
            try:
                process_id = self._route(cls, event)
                if process_id is not None:
                    delivered = await self._deliver(cls, process_id, event) or delivered
            except Exception as exc:
                raise ProcessManagerFailed(
                    cls.__qualname__, event.global_position, str(event.event_id), exc
                ) from exc
        self._position = event.global_position
        if delivered or self._position - self._saved >= self.checkpoint_every:
            await self._save_checkpoint()

    async def _save_checkpoint(self) -> None:
        if self._position > self._saved:
            await self.checkpoints.save_checkpoint(self.name, self._position)
            self._saved = self._position

    @staticmethod
    def _route(manager: type[ProcessManager], event: RecordedEvent[Event]) -> str | None:
        prefix = f"{manager.category}-"
        if event.stream_id.startswith(prefix):
            # A process reacts to its own stream only for the deadlines stored there;
            # the rest of it is its own state. Another stream that merely shares the
            # prefix ("transfer-requests-1") is routed like any other.
            if isinstance(event.data, DeadlineReached):
                return event.stream_id[len(prefix) :]
            if manager._appliers.get(type(event.data)) is not None:
                return None
        if not manager.reacts_to(type(event.data)):
            return None
        return manager.correlate(event)

    async def _deliver(
        self, cls: type[ProcessManager], process_id: str, event: RecordedEvent[Event]
    ) -> bool:
        """Hand ``event`` to one process; return whether the process did anything with it."""
        repository = self._repositories[cls]
        event_id = str(event.event_id)
        attempt = 0
        while True:
            manager = await self._load(cls, process_id, event)
            if manager is None:
                return False
            if event.global_position <= manager.position:
                version_before = manager.unsent_after(event_id)
                if version_before is None:
                    return False
                await self._resend(cls, process_id, event, version_before)
                return True
            if not manager.accepts(event):
                return False
            commands = await manager.decide(event)
            try:
                await repository.save(manager, metadata=EventMetadata.caused_by(event))
            except ConcurrencyConflict:
                attempt += 1
                if attempt > self.conflict_retries:
                    raise
                logger.debug(
                    "a process changed while it handled an event; handling it again",
                    extra={"stream_id": manager.stream_id, "attempt": attempt},
                )
                continue
            await self._send(manager.stream_id, event_id, commands)
            return True

    async def _load(
        self, cls: type[ProcessManager], process_id: str, event: RecordedEvent[Event]
    ) -> ProcessManager | None:
        try:
            manager: ProcessManager = await self._repositories[cls].get(process_id)
        except AggregateNotFound:
            if not cls.starts_with(type(event.data)):
                return None
            manager = cls(process_id)
        manager.clock = self.clock
        return manager

    async def _resend(
        self,
        cls: type[ProcessManager],
        process_id: str,
        event: RecordedEvent[Event],
        version_before: int,
    ) -> None:
        """Decide the commands of an event again, on the process as it was, and send them."""
        if version_before == 0:
            earlier: ProcessManager = cls(process_id)
        else:
            earlier = await self._repositories[cls].get(process_id, version=version_before)
        earlier.clock = self.clock
        commands = await earlier.decide(event)
        logger.info(
            "resending the commands of an event handled before the runner stopped",
            extra={"stream_id": earlier.stream_id, "commands": len(commands)},
        )
        await self._send(earlier.stream_id, str(event.event_id), commands)

    async def _send(self, stream_id: str, event_id: str, commands: list[OutgoingCommand]) -> None:
        if not commands:
            return
        for outgoing in commands:
            await self.sender.send(outgoing.command, metadata=outgoing.metadata)
        # Any expected version: the marker only removes the event from the unsent ones.
        await self.store.append(stream_id, [ProcessCommandsSent(event_id=event_id)])

    # -- deadlines -------------------------------------------------------------

    async def _watch_deadlines(self) -> None:
        while True:
            try:
                await self.scheduler.fire_due()
            except Exception:
                logger.exception("firing deadlines failed", extra={"runner": self.name})
            wait = self.deadline_poll
            next_due = self.scheduler.next_due()
            if next_due is not None:
                until = (next_due - self.clock.now()).total_seconds()
                if until > 0:
                    wait = min(wait, until)
            with anyio.move_on_after(wait):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
