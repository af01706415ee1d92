"""Many writers and subscribers at once: nothing skipped, duplicated or reordered."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any
from uuid import UUID

import anyio

from uno.event_storage.exceptions import (
    TransactionOrderConflict,
    WrongExpectedVersion,
)
from uno.event_storage.testing._fixtures import (
    MoneyDeposited,
    Rollback,
)
from uno.events import (
    ANY,
    AppendResult,
    Event,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    Subscription,
)

__all__ = ["ConcurrencyReport", "run_concurrent_writers"]


class ConcurrencyReport:
    """What the writers committed and what each subscriber saw."""

    def __init__(self) -> None:
        self.committed: dict[UUID, tuple[str, int]] = {}
        self.rolled_back: set[UUID] = set()
        self.seen: list[list[RecordedEvent[Event]]] = []
        self.conflicts = 0

    def check(self) -> None:
        """Assert the ordering guarantees; the message says which one broke."""
        assert self.committed, "no writer committed anything"
        for number, seen in enumerate(self.seen):
            ids = [e.event_id for e in seen]
            assert len(ids) == len(set(ids)), f"subscriber {number} saw an event twice"
            leaked = self.rolled_back & set(ids)
            assert not leaked, f"subscriber {number} saw {len(leaked)} rolled-back events"
            missing = set(self.committed) - set(ids)
            if missing:
                where = sorted(
                    e.global_position for s in self.seen for e in s if e.event_id in missing
                )
                final = seen[-1].global_position if seen else None
                raise AssertionError(
                    f"subscriber {number} missed {len(missing)} committed events: "
                    f"{sorted(self.committed[i] for i in missing)[:5]} at positions {where[:5]}; "
                    f"it saw {len(seen)} events, the last at position {final}"
                )
            positions = [e.global_position for e in seen]
            assert positions == sorted(positions), f"subscriber {number} saw positions out of order"
            last: dict[str, int] = defaultdict(int)
            for event in seen:
                assert event.stream_version == last[event.stream_id] + 1, (
                    f"subscriber {number} saw {event.stream_id} v{event.stream_version} "
                    f"after v{last[event.stream_id]}"
                )
                last[event.stream_id] = event.stream_version


async def run_concurrent_writers(
    store: EventStore,
    *,
    writers: int = 16,
    subscribers: int = 2,
    appends_per_writer: int = 25,
    streams: int = 12,
    seed: int = 0,
    rollback_rate: float = 0.2,
    catch_up_timeout: float = 60,
) -> ConcurrencyReport:
    """Run writers against overlapping streams while subscribers tail the log.

    Each writer appends batches to random streams (shared and its own), mostly
    with exact expected versions (so some conflict), some with ``ANY``, some
    together with one event for a second stream (``append_streams``), and,
    where the store has ``transaction()``, inside transactions rolled back at
    random. Subscribers read from the start until they have seen every
    committed event. Returns a report; call ``check()`` on it.
    """
    report = ConcurrencyReport()
    rng = random.Random(seed)
    transaction = getattr(store, "transaction", None)

    async def writer(number: int) -> None:
        local = random.Random(rng.random())
        for _ in range(appends_per_writer):
            appends = await _pick_appends(store, local, number, streams)
            roll_back = transaction is not None and local.random() < rollback_rate
            try:
                if transaction is not None and (roll_back or local.random() < 0.5):
                    try:
                        async with transaction() as tx:
                            results = await _write(tx, appends)
                            await anyio.sleep(local.random() / 500)
                            if roll_back:
                                raise Rollback
                    except Rollback:
                        report.rolled_back.update(
                            e.event_id for a in appends for e in a.events if isinstance(e, NewEvent)
                        )
                        continue
                else:
                    results = await _write(store, appends)
            except (WrongExpectedVersion, TransactionOrderConflict):
                report.conflicts += 1
                continue
            for append, result in zip(appends, results, strict=True):
                first = result.stream_version - len(append.events)
                for offset, event in enumerate(append.events, start=1):
                    assert isinstance(event, NewEvent)
                    report.committed[event.event_id] = (append.stream_id, first + offset)

    subscriptions = [store.subscribe() for _ in range(subscribers)]
    report.seen = [[] for _ in range(subscribers)]

    async def subscriber(subscription: Subscription, seen: list[RecordedEvent[Event]]) -> None:
        async with subscription:
            async for event in subscription:
                seen.append(event)

    async def run_writers_then_wait_for_catch_up() -> None:
        async with anyio.create_task_group() as group:
            for number in range(writers):
                group.start_soon(writer, number)
        # Writers stopped: subscribers must reach the end without another append.
        committed = set(report.committed)
        with anyio.move_on_after(catch_up_timeout):
            while not all(committed <= {e.event_id for e in seen} for seen in report.seen):
                await anyio.sleep(0.05)
        for subscription in subscriptions:
            await subscription.aclose()

    async with anyio.create_task_group() as tasks:
        for subscription, seen in zip(subscriptions, report.seen, strict=True):
            tasks.start_soon(subscriber, subscription, seen)
        await run_writers_then_wait_for_catch_up()
    return report


def _pick_stream(local: random.Random, number: int, streams: int) -> str:
    """A shared stream half the time, else one of writer ``number``'s own three."""
    if local.random() < 0.5:
        return f"shared-{local.randrange(streams)}"
    return f"own-{number}-{local.randrange(3)}"


async def _pick_appends(
    store: EventStore, local: random.Random, number: int, streams: int
) -> list[StreamAppend]:
    """A batch for a random stream, mostly at its version; sometimes with a second stream."""
    stream = _pick_stream(local, number, streams)
    batch = [NewEvent(data=MoneyDeposited(amount=n)) for n in range(local.randint(1, 4))]
    version = await store.stream_version(stream) or 0
    # Some appends take any version, and some go with a second stream.
    expected: ExpectedVersion = ANY if local.random() < 0.15 else version
    appends = [StreamAppend(stream_id=stream, events=batch, expected_version=expected)]
    other = _pick_stream(local, number, streams)
    if local.random() < 0.15 and other != stream:
        extra = [NewEvent(data=MoneyDeposited(amount=99))]
        appends.append(StreamAppend(stream_id=other, events=extra, expected_version=ANY))
    return appends


async def _write(target: Any, appends: list[StreamAppend]) -> list[AppendResult]:
    """Append one stream's batch with ``append``, or several atomically."""
    if len(appends) == 1:
        (one,) = appends
        return [
            await target.append(one.stream_id, one.events, expected_version=one.expected_version)
        ]
    results: list[AppendResult] = await target.append_streams(appends)
    return results
