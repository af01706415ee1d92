"""Deadlines: stored as events, rebuilt after a restart, fired once by the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from uno.event_sourcing import DeadlineReached, DeadlineScheduler, ProcessManager, register_types
from uno.event_sourcing._deadlines import DeadlineCancelled, DeadlineScheduled
from uno.event_storage import ClosableEventStore, open_event_store
from uno.events import EventRegistry, ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2030, 1, 1, tzinfo=UTC)


class Reminder(ProcessManager):
    category = "reminder"


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ClosableEventStore]:
    registry = register_types(EventRegistry())
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'events.db'}"
    options = {} if request.param == "memory" else {"auto_migrate": True}
    async with open_event_store(url, registry=registry, **options) as opened:
        yield opened


def scheduled(deadline_id: str, name: str, due_at: datetime) -> DeadlineScheduled:
    return DeadlineScheduled(deadline_id=deadline_id, name=name, due_at=due_at, payload={"n": 1})


async def reached_in(store: ClosableEventStore, stream_id: str) -> list[DeadlineReached]:
    return [
        e.data for e in await store.read_stream(stream_id) if isinstance(e.data, DeadlineReached)
    ]


async def test_a_rebuild_keeps_only_deadlines_neither_cancelled_nor_reached(
    store: ClosableEventStore,
) -> None:
    await store.append("reminder-1", [scheduled("d1", "a", START), scheduled("d2", "b", START)])
    await store.append("reminder-1", [DeadlineCancelled(deadline_id="d1", name="a")])
    await store.append("reminder-2", [scheduled("d3", "a", START + timedelta(hours=1))])
    await store.append(
        "reminder-2",
        [DeadlineReached(deadline_id="d3", name="a", due_at=START + timedelta(hours=1))],
    )
    await store.append("other-1", [scheduled("d4", "a", START)])

    scheduler = DeadlineScheduler(store, ManualClock(START), categories=["reminder"])
    await scheduler.rebuild()
    assert [(d.stream_id, d.deadline_id, d.payload) for d in scheduler.pending] == [
        ("reminder-1", "d2", {"n": 1})
    ]
    everything = DeadlineScheduler(store, ManualClock(START))
    await everything.rebuild()
    assert sorted(d.deadline_id for d in everything.pending) == ["d2", "d4"]


async def test_a_deadline_fires_when_the_clock_passes_it_and_only_once(
    store: ClosableEventStore,
) -> None:
    clock = ManualClock(START)
    await store.append("reminder-1", [scheduled("d1", "wake", START + timedelta(minutes=5))])
    first = DeadlineScheduler(store, clock)
    second = DeadlineScheduler(store, clock)  # another process, or the same after a restart
    await first.rebuild()
    await second.rebuild()
    assert await first.fire_due() == 0
    assert first.next_due() == START + timedelta(minutes=5)

    clock.advance(timedelta(minutes=5))
    assert await first.fire_due() == 1
    assert await second.fire_due() == 1  # it did not know: the append is a no-op
    assert first.pending == []
    reached = await reached_in(store, "reminder-1")
    assert reached == [
        DeadlineReached(
            deadline_id="d1", name="wake", due_at=START + timedelta(minutes=5), payload={"n": 1}
        )
    ]

    restarted = DeadlineScheduler(store, clock)
    await restarted.rebuild()
    assert restarted.pending == []
    assert await restarted.fire_due() == 0
    assert len(await reached_in(store, "reminder-1")) == 1


async def test_observe_follows_new_deadline_events_and_skips_those_already_read(
    store: ClosableEventStore,
) -> None:
    await store.append("reminder-1", [scheduled("d1", "a", START)])
    scheduler = DeadlineScheduler(store, ManualClock(START))
    await scheduler.rebuild()
    await store.append("reminder-1", [DeadlineCancelled(deadline_id="d1", name="a")])
    await store.append("reminder-2", [scheduled("d2", "a", START)])
    changed = [scheduler.observe(event) async for event in store.read_all()]
    assert changed == [False, True, True]
    assert [d.deadline_id for d in scheduler.pending] == ["d2"]
    # The scheduling's correlation carries over to the reached deadline.
    assert scheduler.pending[0].correlation_id is not None


def test_scheduling_a_name_again_replaces_the_pending_deadline() -> None:
    reminder = Reminder("r")
    reminder.clock = ManualClock(START)
    reminder.schedule("wake", after=timedelta(minutes=1))
    reminder.schedule("wake", at=START + timedelta(hours=2))
    assert reminder.pending_deadlines == {"wake": START + timedelta(hours=2)}
    assert [type(e.data).__name__ for e in reminder.pending_events] == [
        "DeadlineScheduled",
        "DeadlineCancelled",
        "DeadlineScheduled",
    ]
    assert reminder.cancel_deadline("wake") is True
    assert reminder.cancel_deadline("wake") is False
    assert reminder.pending_deadlines == {}


def test_ending_a_process_cancels_its_pending_deadlines() -> None:
    reminder = Reminder("r")
    reminder.schedule("a", at=START)
    reminder.schedule("b", at=START)
    reminder.fail("gave up")
    assert reminder.pending_deadlines == {}
    assert (reminder.status, reminder.outcome, reminder.is_ended) == ("failed", "gave up", True)
    assert [type(e.data).__name__ for e in reminder.pending_events][-3:] == [
        "DeadlineCancelled",
        "DeadlineCancelled",
        "ProcessFailed",
    ]
