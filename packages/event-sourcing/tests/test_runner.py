"""ProjectionRunner with at-least-once projections on every backend: catch-up, live, status."""

from __future__ import annotations

import anyio
import pytest
from ledger import Balances, Credited, Debited, Noted, StoreOpener

from uno.event_sourcing import (
    CatchUpTimeout,
    Projection,
    ProjectionRunner,
    ProjectionState,
    UnknownProjection,
    handles,
)
from uno.events import Event, RecordedEvent

pytestmark = pytest.mark.anyio


class Notes(Projection):
    name = "notes"

    def __init__(self) -> None:
        self.texts: list[str] = []

    @handles
    async def noted(self, event: RecordedEvent[Noted]) -> None:
        self.texts.append(event.data.text)


async def test_catches_up_then_follows_live_and_saves_the_checkpoint(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=10), Debited(amount=3)])
        await store.append("acct-2", [Credited(amount=5)])
        balances = Balances()
        async with ProjectionRunner(store, [balances], checkpoint_interval=0) as runner:
            await runner.wait_until_caught_up(timeout=10)
            assert dict(balances.balances) == {"acct-1": 7, "acct-2": 5}
            await store.append("acct-2", [Debited(amount=1)])
            await runner.wait_until_caught_up(timeout=10)
            assert dict(balances.balances) == {"acct-1": 7, "acct-2": 4}
            end = await store.log_position()
            status = (await runner.status())["balances"]
            assert (status.position, status.lag_events, status.lag_seconds) == (end, 0, 0.0)
            assert status.state is ProjectionState.CAUGHT_UP
        assert await store.load_checkpoint("balances") == end
        assert set(balances.applied.values()) == {1}


async def test_runs_projections_concurrently_and_checkpoints_past_events_they_ignore(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=10)])
        await store.append("log", [Noted(text="a"), Noted(text="b")])
        balances, notes = Balances(), Notes()
        async with ProjectionRunner(store, [balances, notes], checkpoint_interval=0) as runner:
            await runner.wait_until_caught_up(timeout=10)
            await store.append("log", [Noted(text="c")])
            await runner.wait_until_caught_up(timeout=10)
        end = await store.log_position()
        assert dict(balances.balances) == {"acct-1": 10}
        assert notes.texts == ["a", "b", "c"]
        # Both checkpoints reached the end, past the events each one ignores.
        assert await store.load_checkpoint("balances") == end
        assert await store.load_checkpoint("notes") == end


async def test_restarts_from_the_checkpoint_without_applying_events_again(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1), Credited(amount=2)])
        first = Balances()
        async with ProjectionRunner(store, [first]) as runner:
            await runner.wait_until_caught_up(timeout=10)
        await store.append("acct-1", [Credited(amount=4)])
        second = Balances()
        async with ProjectionRunner(store, [second]) as runner:
            await runner.wait_until_caught_up(timeout=10)
        assert dict(second.balances) == {"acct-1": 4}  # only the event after the checkpoint


async def test_status_reports_lag_in_events_and_seconds_of_a_stopped_projection(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1), Noted(text="x"), Debited(amount=1)])
        runner = ProjectionRunner(store, [Balances()])
        async with runner:
            await runner.wait_until_caught_up(timeout=10)
        await store.append("acct-1", [Credited(amount=1), Noted(text="y"), Debited(amount=1)])
        status = (await runner.status())["balances"]
        assert status.state is ProjectionState.STOPPED
        assert status.lag_events == 2  # the ignored Noted event is not lag
        assert status.lag_seconds >= 0.0


async def test_wait_until_caught_up_times_out_while_a_handler_blocks(
    open_store: StoreOpener,
) -> None:
    class Slow(Projection):
        name = "slow"

        @handles
        async def credited(self, event: RecordedEvent[Credited]) -> None:
            await anyio.sleep(30)

    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1)])
        async with ProjectionRunner(store, [Slow()]) as runner:
            with pytest.raises(CatchUpTimeout) as caught:
                await runner.wait_until_caught_up(timeout=0.2)
            assert caught.value.behind == ["slow"]
            assert (await runner.status())["slow"].state is ProjectionState.RUNNING


async def test_rebuild_replays_into_a_reset_read_model_and_reports_progress(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        for i in range(7):
            await store.append(f"acct-{i % 3}", [Credited(amount=i), Noted(text=str(i))])
        balances = Balances()
        calls: list[tuple[int, int]] = []
        async with ProjectionRunner(store, [balances], batch_size=3) as runner:
            await runner.wait_until_caught_up(timeout=10)
            expected = dict(balances.balances)
            balances.balances["acct-0"] = -999  # a corrupted read model
            applied = await runner.rebuild("balances", progress=lambda d, t: calls.append((d, t)))
            assert applied == 7
            assert dict(balances.balances) == expected
            assert calls == [(0, 7), (3, 7), (6, 7), (7, 7)]
            await store.append("acct-0", [Credited(amount=100)])  # live again after the rebuild
            await runner.wait_until_caught_up(timeout=10)
            assert balances.balances["acct-0"] == expected["acct-0"] + 100
            with pytest.raises(UnknownProjection):
                await runner.rebuild("nope")


async def test_an_event_class_hierarchy_is_delivered_to_a_handler_of_the_base(
    open_store: StoreOpener,
) -> None:
    class Everything(Projection):
        name = "everything"

        def __init__(self) -> None:
            self.types: list[str] = []

        @handles(Event)
        async def any_event(self, event: RecordedEvent[Event]) -> None:
            self.types.append(event.event_type)

    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1), Noted(text="n")])
        everything = Everything()
        assert {"ledger.Credited", "ledger.Noted"} <= Everything.event_types()
        async with ProjectionRunner(store, [everything]) as runner:
            await runner.wait_until_caught_up(timeout=10)
        assert everything.types == ["ledger.Credited", "ledger.Noted"]
