"""The projection runner: projections kept up to date concurrently, with status and rebuild."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup

from uno.event_sourcing._leasing import StoppableTask, lease_store_of, stop_task_group
from uno.event_sourcing._parking import (
    ParkedReplay,
    ProjectionEventParked,
    parked_records,
    replay_parked,
)
from uno.event_sourcing._partitions import Partition, partitions_of
from uno.event_sourcing._policies import FailurePolicy, Retry, Skip, Stop
from uno.event_sourcing._projection import Projection, ProjectionBase, TransactionalProjection
from uno.event_sourcing._worker import ProjectionState, ProjectionStore, ProjectionWorker, closing
from uno.event_sourcing.exceptions import (
    CatchUpTimeout,
    ProjectionConfigurationError,
    UnknownProjection,
)
from uno.events import (
    Event,
    EventRegistry,
    Lease,
    LeaseStore,
    RawEvent,
    RawLogReader,
    RecordedEvent,
)

__all__ = ["ProjectionRunner", "ProjectionStatus"]

logger = logging.getLogger("uno.event_sourcing.projections")


@dataclass(frozen=True)
class ProjectionStatus:
    """Where one projection, or one partition of it, stands in this runner.

    Attributes:
        name: The projection's name, or ``<name>#<i>/<N>`` for a partition.
        position: The last global position it processed.
        lag_events: Events of its types after ``position`` (for a partition,
            of every partition: an upper bound).
        lag_seconds: Age of the oldest of those events, 0 when there is none.
        state: running, caught_up, stopped (or its lease is elsewhere) or failed.
        error: Why it failed, when it did.
    """

    name: str
    position: int
    lag_events: int
    lag_seconds: float
    state: ProjectionState
    error: BaseException | None = None


class ProjectionRunner:
    """Run projections: catch up from their checkpoints, then follow the log live.

    Use it as an async context manager; each projection (each held partition)
    runs in its own task, and leaving the block stops them all::

        async with ProjectionRunner(store, [Balances(), Statements()]) as runner:
            await runner.wait_until_caught_up()

    Args:
        store: The event store. A ``TransactionalProjection`` needs a
            ``TransactionalEventStore``.
        projections: The projections, with distinct names.
        policy: What to do when a handler raises: ``Stop()`` (the default),
            ``Retry(...)`` or ``Skip()``.
        policies: A policy per projection name, overriding ``policy``.
        batch_size: Most events per batch (and per transaction).
        checkpoint_interval: Seconds between checkpoint saves while only
            events a projection ignores go by.
        leases: Where partitions are leased; defaults to ``store.lease_store()``.
        lease_interval: Seconds between checks of held leases and attempts to
            take free partitions (how fast a dead process's partitions move).
        max_partitions: Most partitions of each projection this runner holds
            (``None``: all it can get), so several processes share them.
    """

    def __init__(
        self,
        store: ProjectionStore,
        projections: Sequence[ProjectionBase],
        *,
        policy: FailurePolicy | None = None,
        policies: Mapping[str, FailurePolicy] | None = None,
        batch_size: int = 500,
        checkpoint_interval: float = 1.0,
        leases: LeaseStore | None = None,
        lease_interval: float = 1.0,
        max_partitions: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ProjectionConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        if lease_interval <= 0 or checkpoint_interval < 0:
            raise ProjectionConfigurationError(
                "lease_interval must be > 0 and checkpoint_interval >= 0"
            )
        if max_partitions is not None and max_partitions < 1:
            raise ProjectionConfigurationError(f"max_partitions must be >= 1, got {max_partitions}")
        self._store = store
        self._projections: dict[str, ProjectionBase] = {}
        for projection in projections:
            if not isinstance(projection, Projection | TransactionalProjection):
                raise ProjectionConfigurationError(
                    f"{projection!r} is not a Projection or TransactionalProjection instance"
                )
            name = projection.projection_name()
            if name in self._projections:
                raise ProjectionConfigurationError(f"two projections are named {name!r}")
            self._projections[name] = projection
        policies = dict(policies or {})
        for name in policies:
            self._projection(name)
        default = policy or Stop()
        self._workers: dict[str, list[ProjectionWorker]] = {}
        for name, projection in self._projections.items():
            count = type(projection).partitions
            parts: list[Partition | None] = [None] if count == 1 else [*partitions_of(name, count)]
            self._workers[name] = [
                ProjectionWorker(
                    store,
                    projection,
                    partition=part,
                    policy=policies.get(name, default),
                    batch_size=batch_size,
                    checkpoint_interval=checkpoint_interval,
                )
                for part in parts
            ]
        self._partitioned = [w for ws in self._workers.values() for w in ws if w.partition]
        self._lease_store = (
            leases if leases is not None or not self._partitioned else _leases_of(store)
        )
        self._lease_interval = lease_interval
        self._max_partitions = max_partitions
        self._leases: dict[str, Lease] = {}
        self._tasks: dict[str, StoppableTask] = {}
        self._group: TaskGroup | None = None
        if any(_may_skip(p) for p in [default, *policies.values()]):
            registry = getattr(store, "registry", None)
            if isinstance(registry, EventRegistry) and ProjectionEventParked not in registry:
                registry.register(ProjectionEventParked)

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        for workers in self._workers.values():
            for worker in workers:
                if worker.partition is None:
                    self._start(worker)
        if self._partitioned:
            try:
                await self._take_free_partitions()
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
            group.start_soon(self._keep_leases)
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
                for lease in self._leases.values():
                    await lease.release()
            self._leases.clear()
            self._tasks.clear()

    def _start(self, worker: ProjectionWorker) -> None:
        assert self._group is not None
        task = self._tasks[worker.checkpoint] = StoppableTask()
        worker.state, worker.error = ProjectionState.RUNNING, None
        task.start(self._group, worker.run, name=f"projection {worker.checkpoint}")

    async def _stop(self, worker: ProjectionWorker) -> None:
        task = self._tasks.pop(worker.checkpoint, None)
        if task is not None:
            await task.stop()
        worker.state = ProjectionState.STOPPED

    # -- partitions ------------------------------------------------------------

    async def _keep_leases(self) -> None:
        while True:
            await anyio.sleep(self._lease_interval)
            await self._check_leases()
            await self._take_free_partitions()

    async def _check_leases(self) -> None:
        for name, lease in list(self._leases.items()):
            if await lease.check():
                continue
            logger.warning("lost the lease of a projection partition", extra={"partition": name})
            del self._leases[name]
            worker = next(w for w in self._partitioned if w.checkpoint == name)
            await self._stop(worker)
            await lease.release()

    async def _take_free_partitions(self) -> None:
        assert self._lease_store is not None
        for workers in self._workers.values():
            held = sum(1 for w in workers if w.checkpoint in self._leases)
            for worker in workers:
                if worker.partition is None or worker.checkpoint in self._leases:
                    continue
                if self._max_partitions is not None and held >= self._max_partitions:
                    break
                lease = await self._lease_store.try_acquire(worker.checkpoint)
                if lease is None:
                    continue
                logger.info("took a projection partition", extra={"partition": worker.checkpoint})
                self._leases[worker.checkpoint] = lease
                held += 1
                self._start(worker)

    def held_partitions(self) -> list[str]:
        """Return the names (``<name>#<i>/<N>``) of the partitions this runner holds now."""
        return sorted(self._leases)

    # -- status ----------------------------------------------------------------

    def _projection(self, name: str) -> ProjectionBase:
        try:
            return self._projections[name]
        except KeyError:
            raise UnknownProjection(name, sorted(self._projections)) from None

    def _active(self) -> list[ProjectionWorker]:
        return [
            w
            for ws in self._workers.values()
            for w in ws
            if w.partition is None or w.checkpoint in self._leases
        ]

    async def wait_until_caught_up(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until every projection (every held partition) reached the log's current end.

        Raises:
            ProjectionFailed: a projection stopped on a failing event (its error).
            CatchUpTimeout: they did not catch up within ``timeout`` seconds.
        """
        target = await self._store.log_position()
        with anyio.move_on_after(timeout):
            while True:
                active = self._active()
                for worker in active:
                    if worker.state is ProjectionState.FAILED and worker.error is not None:
                        raise worker.error
                if all(w.position >= target for w in active):
                    return
                await anyio.sleep(0.01)
        behind = [w.checkpoint for w in self._active() if w.position < target]
        raise CatchUpTimeout(timeout, behind)

    async def status(self) -> dict[str, ProjectionStatus]:
        """Return the status of every projection and partition, by name."""
        found: dict[str, ProjectionStatus] = {}
        now = datetime.now(UTC)
        for workers in self._workers.values():
            for worker in workers:
                position = worker.position
                if worker.state is ProjectionState.STOPPED:
                    position = await self._store.load_checkpoint(worker.checkpoint) or 0
                lag = await self._store.count_events(after=position, event_types=worker.event_types)
                age = 0.0
                if lag:
                    oldest = await self._oldest_recorded_at(position, worker.event_types)
                    if oldest is not None:
                        age = max(0.0, (now - oldest).total_seconds())
                found[worker.checkpoint] = ProjectionStatus(
                    worker.checkpoint, position, lag, age, worker.state, worker.error
                )
        return found

    async def _oldest_recorded_at(
        self, after: int, event_types: Collection[str]
    ) -> datetime | None:
        """Return when the first event after ``after`` was recorded, read undecoded if possible.

        Undecoded, an event that does not decode still gives its age.
        """
        store = self._store
        events: AsyncIterator[RawEvent] | AsyncIterator[RecordedEvent[Event]]
        if isinstance(store, RawLogReader):
            events = store.read_all_raw(after=after, event_types=event_types, batch_size=1)
        else:
            events = store.read_all(after=after, event_types=event_types, batch_size=1)
        async with closing(events):
            async for event in events:
                return event.recorded_at
        return None

    # -- rebuild ---------------------------------------------------------------

    async def rebuild(
        self, name: str, *, progress: Callable[[int, int], object] | None = None
    ) -> int:
        """Clear a projection's read model and replay the whole log into it, then follow live.

        The projection stops while the others go on; ``reset`` clears its
        read model (in one transaction with the checkpoint for a
        ``TransactionalProjection``), then every event of its types up to the
        current end of the log is applied. ``progress(processed, total)`` is
        called before the first batch and after each. Returns the number of
        events applied.

        Raises:
            UnknownProjection: the runner has no projection of that name.
            ProjectionConfigurationError: the runner is not started, or the
                projection is partitioned (stop every runner of it, reset the
                read model and delete the partitions' checkpoints instead).
            ProjectionFailed: an event failed under the ``Stop`` policy.
        """
        self._projection(name)
        workers = self._workers[name]
        if self._group is None:
            raise ProjectionConfigurationError("rebuild needs a started runner: use async with")
        if len(workers) > 1:
            raise ProjectionConfigurationError(
                f"{name!r} is partitioned: rebuild it with every runner stopped (reset the read "
                "model, set each partition's checkpoint to 0) and start them again"
            )
        (worker,) = workers
        await self._stop(worker)
        logger.info("rebuilding projection", extra={"projection": name})
        try:
            await worker.reset()
            count = await worker.replay(progress)
        except Exception as exc:
            worker.state, worker.error = ProjectionState.FAILED, exc
            raise
        self._start(worker)
        return count

    # -- parked events ---------------------------------------------------------

    async def parked(self, name: str) -> list[ProjectionEventParked]:
        """Return the events a projection parked that were not replayed yet, oldest first."""
        self._projection(name)
        return [record for _, record in await parked_records(self._store, name)]

    async def replay_parked(self, name: str) -> ParkedReplay:
        """Apply a projection's parked events once more, oldest first.

        Each event is tried once; one that fails again is parked anew (with
        the new error) and the replay goes on. Replay runs beside the live
        projection; the parked events are applied out of their log order.
        """
        return await replay_parked(self._store, self._projection(name))


def _may_skip(policy: FailurePolicy) -> bool:
    return isinstance(policy, Skip) or (isinstance(policy, Retry) and isinstance(policy.then, Skip))


def _leases_of(store: ProjectionStore) -> LeaseStore:
    leases = lease_store_of(store)
    if leases is None:
        raise ProjectionConfigurationError(
            f"partitioned projections need leases and {type(store).__name__} has no "
            "lease_store(): pass leases=... to ProjectionRunner"
        )
    return leases
