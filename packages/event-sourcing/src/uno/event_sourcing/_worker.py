"""One projection (or one partition of it) kept up to date: catch up, follow, apply, checkpoint.

A worker reads the global log after its checkpoint, filtered by the
projection's event types, and applies batches; then it follows the log live
through a subscription (filtered by the same types, in the store, so catch-up
and live agree on what they read). A transactional projection's batch runs in one
transaction with its checkpoint; when the batch fails, each event runs alone
so the failure policy applies to the failing event only.

Checkpoint guard: before a transactional batch writes, it takes a row lock
(the checkpoint ``<checkpoint>:guard``, written in the transaction) and
re-reads its checkpoint. If the checkpoint is not the one this worker last
saved, another process ran the same partition (a lease lost and taken over):
the transaction rolls back and the worker starts again from the stored
checkpoint, so no event is applied twice.

Unreadable events: when the store cannot decode an event of the projection's
types (``EventDecodeError``, ``UnknownEventType``, ``UpcastError``, each naming
its position), the events before it are applied first. Then ``Skip`` (or a
``Retry`` whose ``then`` is ``Skip``; decoding again would fail again, so it
is not retried) parks it with its stored bytes, read with ``read_all_raw``,
and goes on; ``Stop`` stops the projection before it, as for a failing handler.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from uno.event_sourcing._parking import parked_event, parked_stream
from uno.event_sourcing._partitions import Partition
from uno.event_sourcing._policies import FailurePolicy, Retry, Skip
from uno.event_sourcing._projection import Projection, ProjectionBase, TransactionalProjection
from uno.event_sourcing.exceptions import ProjectionConfigurationError, ProjectionFailed
from uno.events import (
    CheckpointStore,
    Event,
    EventStore,
    RawEvent,
    RawLogReader,
    RecordedEvent,
    StoreTransaction,
    Subscription,
    TransactionalEventStore,
)
from uno.events.exceptions import (
    EventDecodeError,
    StoreUnavailable,
    UnknownEventType,
    UpcastError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ["ProjectionState", "ProjectionStore", "ProjectionWorker", "closing"]

logger = logging.getLogger("uno.event_sourcing.projections")
_tracer = trace.get_tracer("uno.event_sourcing")
_UNAVAILABLE_WAIT = 1.0
_T = TypeVar("_T")

Unreadable = EventDecodeError | UnknownEventType | UpcastError
"""What a read raises for a stored event it cannot decode; each names its ``position``."""
_UNREADABLE = (EventDecodeError, UnknownEventType, UpcastError)


class ProjectionStore(EventStore, CheckpointStore, Protocol):
    """What a projection runner needs of a store: the global log and checkpoints.

    Every uno store is one; a ``TransactionalProjection`` needs a
    ``TransactionalEventStore`` (which is one too).
    """


@asynccontextmanager
async def closing(events: AsyncIterator[_T]) -> AsyncIterator[AsyncIterator[_T]]:
    """Yield ``events`` and close the iterator (if it can be closed) on leaving, even early."""
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


class ProjectionState(enum.Enum):
    """Where a projection (or partition) of a runner stands."""

    RUNNING = "running"
    """Processing events it has not reached the end of."""
    CAUGHT_UP = "caught_up"
    """At the end of the log, waiting for new events."""
    STOPPED = "stopped"
    """Not running here (not started, rebuilding, or its partition lease is elsewhere)."""
    FAILED = "failed"
    """Stopped by its failure policy, or by an error of the store; see ``error``."""


_IDLE_CHECK = 0.05
"""Seconds a live worker waits for an event before it looks how far its subscription read."""


@dataclass
class _Live:
    """What the live pump shares with the consumer: its subscription, and if it holds an event."""

    subscription: Subscription | None = None
    in_flight: bool = False


class CheckpointMoved(Exception):
    """The stored checkpoint is not the one this worker saved: someone else ran it."""

    def __init__(self, stored: int) -> None:
        self.stored = stored
        super().__init__(stored)


class ProjectionWorker:
    """Runs one projection, or one partition of it, from its checkpoint.

    Args:
        store: The event store (a ``TransactionalEventStore`` for a
            ``TransactionalProjection``).
        projection: What to apply events to.
        partition: The partition this worker runs, or ``None`` for all events.
        policy: What to do when a handler raises.
        batch_size: Most events per batch (and per transaction).
        checkpoint_interval: Seconds between checkpoint saves while only
            events the projection ignores go by.
    """

    def __init__(
        self,
        store: ProjectionStore,
        projection: ProjectionBase,
        *,
        partition: Partition | None,
        policy: FailurePolicy,
        batch_size: int,
        checkpoint_interval: float,
    ) -> None:
        self.projection = projection
        self.projection_name = projection.projection_name()
        self.partition = partition
        self.checkpoint = partition.checkpoint if partition else self.projection_name
        self.event_types = projection.event_types()
        self.position = 0
        """The last global position processed (in memory; may be ahead of the checkpoint)."""
        self.state = ProjectionState.STOPPED
        self.error: BaseException | None = None
        self._store = store
        self._tx_store: TransactionalEventStore | None = None
        if isinstance(projection, TransactionalProjection):
            if not isinstance(store, TransactionalEventStore):
                raise ProjectionConfigurationError(
                    f"{type(projection).__qualname__} is a TransactionalProjection but "
                    f"{type(store).__name__} has no transaction(): use a Projection, or a "
                    "store with transactions (SQLite, PostgreSQL)"
                )
            self._tx_store = store
        self._policy = policy
        self._batch_size = batch_size
        self._checkpoint_interval = checkpoint_interval
        self._stored = 0
        self._saved_at = 0.0
        self._guard = f"{self.checkpoint}:guard"

    def transactional_store(self) -> TransactionalEventStore:
        """Return the store as a ``TransactionalEventStore`` (for a transactional projection)."""
        if self._tx_store is None:
            raise ProjectionConfigurationError(f"{self.projection_name!r} is not transactional")
        return self._tx_store

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Catch up, then follow the log, until cancelled, failed, or the store closes.

        A handler's failure goes through the policy; ``StoreUnavailable`` makes
        the worker wait a second and start again from its checkpoint; any other
        error stops it with state ``failed``.
        """
        self.state, self.error = ProjectionState.RUNNING, None
        try:
            while not await self._run_once():
                pass
        except ProjectionFailed as exc:
            self._fail(exc)
        except Exception as exc:
            logger.exception(
                "projection stopped on an error", extra={"projection": self.checkpoint}
            )
            self._fail(exc)
        finally:
            if self.state is not ProjectionState.FAILED:
                self.state = ProjectionState.STOPPED

    async def _run_once(self) -> bool:
        """Run from the stored checkpoint; return ``False`` to start again from it."""
        try:
            await self._load()
            await self._catch_up()
            await self._follow()
        except CheckpointMoved as moved:
            logger.warning(
                "projection checkpoint moved under it; restarting from the stored one",
                extra={"projection": self.checkpoint, "stored": moved.stored},
            )
            return False
        except StoreUnavailable as exc:
            # The database is away: the projection waits for it rather than fail for good.
            logger.warning(
                "event store unavailable; the projection retries from its checkpoint",
                extra={"projection": self.checkpoint, "error": str(exc)},
            )
            await anyio.sleep(_UNAVAILABLE_WAIT)
            return False
        return True

    def _fail(self, exc: BaseException) -> None:
        self.state, self.error = ProjectionState.FAILED, exc

    async def _load(self) -> None:
        self.position = self._stored = await self._store.load_checkpoint(self.checkpoint) or 0
        self._saved_at = time.monotonic()

    async def _catch_up(self) -> None:
        store, size = self._store, self._batch_size
        while True:
            end = await store.log_position()
            seen = 0
            last = self.position
            batch: list[RecordedEvent[Event]] = []
            events = store.read_all(
                after=self.position, event_types=self.event_types, batch_size=size
            )
            async with closing(events):
                try:
                    async for event in events:
                        seen += 1
                        last = event.global_position
                        if self._mine(event):
                            batch.append(event)
                        if len(batch) >= size:
                            await self._process(batch, last)
                            batch = []
                except _UNREADABLE as exc:
                    await self._process(batch, last)  # the good events before it
                    await self._unreadable(exc)
                    continue  # read on after it
            await self._process(batch, max(last, end))
            if seen == 0:
                return

    async def _follow(self) -> None:
        send, receive = anyio.create_memory_object_stream[RecordedEvent[Event] | Unreadable](
            self._batch_size
        )
        errors: list[Exception] = []
        live = _Live()

        async def pump() -> None:
            after = self.position
            try:
                async with send:
                    while True:
                        try:
                            async with self._store.subscribe(
                                after=after, event_types=self.event_types
                            ) as subscription:
                                live.subscription = subscription
                                events = aiter(subscription)
                                while True:
                                    try:
                                        event = await anext(events)
                                    except StopAsyncIteration:
                                        return
                                    live.in_flight = True
                                    await send.send(event)
                                    live.in_flight = False
                        except _UNREADABLE as exc:
                            if exc.position is None:
                                raise
                            # The consumer decides, in order; the pump reads on after it.
                            live.subscription, live.in_flight = None, True
                            await send.send(exc)
                            live.in_flight = False
                            after = exc.position
            except anyio.BrokenResourceError:
                pass  # the consumer stopped
            except Exception as exc:
                errors.append(exc)

        # Errors leave as themselves, not in an exception group: the pump's are
        # kept aside, and the consumer's are raised once the pump is cancelled.
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pump)
            try:
                with receive:
                    await self._consume(receive, live)
            except Exception as exc:
                errors.append(exc)
            tasks.cancel_scope.cancel()
        if errors:
            raise errors[0]

    async def _consume(
        self, receive: MemoryObjectReceiveStream[RecordedEvent[Event] | Unreadable], live: _Live
    ) -> None:
        self.state = ProjectionState.CAUGHT_UP
        while True:
            drained: list[RecordedEvent[Event] | Unreadable] = []
            try:
                with anyio.move_on_after(_IDLE_CHECK):
                    drained.append(await receive.receive())
            except anyio.EndOfStream:
                return
            if not drained:
                await self._scanned(live)
                continue
            self.state = ProjectionState.RUNNING
            while len(drained) < self._batch_size:
                try:
                    drained.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await self._process_drained(drained)
            if receive.statistics().current_buffer_used == 0:
                self.state = ProjectionState.CAUGHT_UP

    async def _scanned(self, live: _Live) -> None:
        """Move past the events the store filtered out, while nothing is in flight.

        The subscription filters by type in the store, so the events of other
        types never arrive here; its ``position`` says how far it has read.
        Nothing read is waiting to be processed when the pump holds no event
        (``in_flight``) and this side has drained the stream.
        """
        position = getattr(live.subscription, "position", None)
        if live.in_flight or not isinstance(position, int) or position <= self.position:
            return
        await self._process([], position, lazy=True)

    async def _process_drained(self, drained: list[RecordedEvent[Event] | Unreadable]) -> None:
        """Process live events in order, an unreadable one after the events before it."""
        run: list[RecordedEvent[Event]] = []
        for item in [*drained, None]:
            if isinstance(item, RecordedEvent):
                run.append(item)
                continue
            if run:
                batch = [e for e in run if self._mine(e) and self.projection.handles_event(e)]
                await self._process(batch, run[-1].global_position, lazy=True)
                run = []
            if item is not None:
                await self._unreadable(item)

    def _mine(self, event: RecordedEvent[Event]) -> bool:
        return self.partition is None or self.partition.holds(event.stream_id)

    # -- unreadable events -----------------------------------------------------

    async def _unreadable(self, error: Unreadable) -> None:
        """Get past a stored event that does not decode: park it (``Skip``) or stop.

        The checkpoint moves past it only when it is parked, or when it
        belongs to another partition (whose worker decides).
        """
        position = error.position
        if position is None:  # not from a store's read: nothing to get past
            raise error
        if (
            self.partition is not None
            and error.stream_id is not None
            and not self.partition.holds(error.stream_id)
        ):
            await self._process([], position)
            return
        raw = await self._raw_event(position)
        policy = self._policy
        final = policy.then if isinstance(policy, Retry) else policy
        if not isinstance(final, Skip) or raw is None:
            event_id = str(raw.event_id) if raw is not None else "unknown"
            raise ProjectionFailed(self.checkpoint, position, event_id, error) from error
        logger.error(
            "projection cannot decode an event; parking it with its stored bytes",
            extra={"projection": self.checkpoint, "position": position, "error": str(error)},
        )
        if self._tx_store is None:
            await self._park(raw, error)
            await self._save(position)
        else:
            await self._park_in_transaction(raw, error)

    async def _raw_event(self, position: int) -> RawEvent | None:
        """Return the stored event at ``position`` undecoded (``None``: the store cannot)."""
        store = self._store
        if not isinstance(store, RawLogReader):
            return None
        events = store.read_all_raw(after=position - 1, batch_size=1)
        async with closing(events):
            async for raw in events:
                return raw if raw.global_position == position else None
        return None

    # -- applying --------------------------------------------------------------

    async def _process(
        self, batch: Sequence[RecordedEvent[Event]], upto: int, *, lazy: bool = False
    ) -> None:
        """Apply ``batch`` and move the checkpoint to ``upto`` (past events it ignored)."""
        if not batch:
            if upto <= self.position and upto <= self._stored:
                return
            if lazy and time.monotonic() - self._saved_at < self._checkpoint_interval:
                self.position = max(self.position, upto)
                return
            # The position moves once the checkpoint is saved (``_saved``), so a
            # caller that waits for the position finds the checkpoint there too.
            await self._save(max(self.position, upto))
            return
        with _tracer.start_as_current_span(
            f"{self.checkpoint} process",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.operation.type": "process",
                "messaging.batch.message_count": len(batch),
                "uno.projection.name": self.checkpoint,
            },
        ):
            if self._tx_store is not None:
                await self._process_in_transaction(batch, upto)
            else:
                await self._apply_each(batch)
                await self._save(upto)

    async def _apply_each(self, batch: Sequence[RecordedEvent[Event]]) -> None:
        done = 0
        try:
            for event in batch:
                await self._with_policy(event, self._apply, self._park)
                done = event.global_position
        except ProjectionFailed:
            if done:  # keep what the batch applied before the failing event
                await self._save(done)
            raise

    async def _process_in_transaction(
        self, batch: Sequence[RecordedEvent[Event]], upto: int
    ) -> None:
        assert self._tx_store is not None
        projection = self.projection
        assert isinstance(projection, TransactionalProjection)
        try:
            async with self._tx_store.transaction() as tx:
                await self._check_guard(tx)
                for event in batch:
                    await projection.apply(event, tx)
                await tx.save_checkpoint(self.checkpoint, upto)
        except (CheckpointMoved, StoreUnavailable):
            raise
        except Exception:
            if len(batch) > 1:
                logger.info(
                    "projection batch failed; applying its events one by one",
                    extra={"projection": self.checkpoint, "events": len(batch)},
                )
            for event in batch:
                await self._with_policy(
                    event, self._apply_in_transaction, self._park_in_transaction
                )
            if upto > self._stored:
                await self._save(upto)
            return
        self._saved(upto)

    async def _with_policy(
        self,
        event: RecordedEvent[Event],
        attempt: Callable[[RecordedEvent[Event]], Awaitable[None]],
        park: Callable[[RecordedEvent[Event], BaseException], Awaitable[None]],
    ) -> None:
        policy, tries = self._policy, 1
        while True:
            try:
                await attempt(event)
            except (CheckpointMoved, StoreUnavailable):  # not the handler's failure
                raise
            except Exception as exc:
                if isinstance(policy, Retry) and tries < policy.max_attempts:
                    wait = policy.backoff(tries)
                    logger.warning(
                        "projection handler failed; retrying",
                        extra={
                            "projection": self.checkpoint,
                            "position": event.global_position,
                            "attempt": tries,
                            "wait": wait,
                            "error": repr(exc),
                        },
                    )
                    tries += 1
                    await anyio.sleep(wait)
                    continue
                final = policy.then if isinstance(policy, Retry) else policy
                if isinstance(final, Skip):
                    logger.exception(
                        "projection handler failed; parking the event",
                        extra={
                            "projection": self.checkpoint,
                            "position": event.global_position,
                            "error": repr(exc),
                        },
                    )
                    await park(event, exc)
                    return
                raise ProjectionFailed(
                    self.checkpoint, event.global_position, str(event.event_id), exc
                ) from exc
            else:
                return

    async def _apply(self, event: RecordedEvent[Event]) -> None:
        projection = self.projection
        assert isinstance(projection, Projection)
        await projection.apply(event)

    async def _park(self, event: RecordedEvent[Event] | RawEvent, error: BaseException) -> None:
        record = parked_event(self.projection_name, event, error)
        await self._store.append(parked_stream(self.projection_name), [record])

    async def _apply_in_transaction(self, event: RecordedEvent[Event]) -> None:
        assert self._tx_store is not None
        projection = self.projection
        assert isinstance(projection, TransactionalProjection)
        async with self._tx_store.transaction() as tx:
            await self._check_guard(tx)
            await projection.apply(event, tx)
            await tx.save_checkpoint(self.checkpoint, event.global_position)
        self._saved(event.global_position)

    async def _park_in_transaction(
        self, event: RecordedEvent[Event] | RawEvent, error: BaseException
    ) -> None:
        assert self._tx_store is not None
        record = parked_event(self.projection_name, event, error)
        async with self._tx_store.transaction() as tx:
            await self._check_guard(tx)
            await tx.append(parked_stream(self.projection_name), [record])
            await tx.save_checkpoint(self.checkpoint, event.global_position)
        self._saved(event.global_position)

    async def _save(self, position: int) -> None:
        if self._tx_store is None:
            await self._store.save_checkpoint(self.checkpoint, position)
        else:
            async with self._tx_store.transaction() as tx:
                await self._check_guard(tx)
                await tx.save_checkpoint(self.checkpoint, position)
        self._saved(position)

    def _saved(self, position: int) -> None:
        self._stored = position
        self.position = max(self.position, position)
        self._saved_at = time.monotonic()

    async def _check_guard(self, tx: StoreTransaction) -> None:
        # Writing the guard row first makes a concurrent transaction of the same
        # checkpoint wait for ours to end; the read after it sees what it committed.
        await tx.save_checkpoint(self._guard, 0)
        stored = await tx.load_checkpoint(self.checkpoint) or 0
        if stored != self._stored:
            raise CheckpointMoved(stored)

    # -- rebuilding ------------------------------------------------------------

    async def reset(self) -> None:
        """Clear the read model and set the checkpoint to 0 (the worker must not be running)."""
        projection = self.projection
        if isinstance(projection, TransactionalProjection):
            assert self._tx_store is not None
            async with self._tx_store.transaction() as tx:
                await tx.save_checkpoint(self._guard, 0)
                await projection.reset(tx)
                await tx.save_checkpoint(self.checkpoint, 0)
        else:
            assert isinstance(projection, Projection)
            await projection.reset()
            await self._store.save_checkpoint(self.checkpoint, 0)
        self.position = self._stored = 0

    async def replay(self, progress: Callable[[int, int], object] | None) -> int:
        """Apply every event up to the current end of the log; return how many were applied."""
        store, size = self._store, self._batch_size
        self.state, self.error = ProjectionState.RUNNING, None
        end = await store.log_position()
        total = await store.count_events(before=end, event_types=self.event_types) if end else 0
        done = 0
        if progress is not None:
            progress(done, total)
        batch: list[RecordedEvent[Event]] = []
        events = store.read_all(after=self.position, event_types=self.event_types, batch_size=size)
        async with closing(events):
            async for event in events:
                if event.global_position > end:
                    break
                batch.append(event)
                if len(batch) >= size:
                    done += await self._replayed(batch, progress, total, done)
                    batch = []
        if batch:
            done += await self._replayed(batch, progress, total, done)
        await self._process([], end)
        return done

    async def _replayed(
        self,
        batch: list[RecordedEvent[Event]],
        progress: Callable[[int, int], object] | None,
        total: int,
        done: int,
    ) -> int:
        await self._process(batch, batch[-1].global_position)
        if progress is not None:
            progress(done + len(batch), total)
        return len(batch)
