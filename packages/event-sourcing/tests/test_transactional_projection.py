"""TransactionalProjection on SQLite and PostgreSQL: read model and checkpoint commit together."""

from __future__ import annotations

import random

import anyio
import pytest
from ledger import (
    Credited,
    Debited,
    Noted,
    SqlBalances,
    StoreOpener,
    event_ids,
    expected_balances,
    read_model,
)

from uno.event_sourcing import ProjectionFailed, ProjectionRunner, Skip, Stop
from uno.event_sourcing.exceptions import ProjectionConfigurationError
from uno.event_storage import ClosableEventStore
from uno.events import TransactionalEventStore

pytestmark = pytest.mark.anyio


async def _projection(store: ClosableEventStore, **options: str) -> SqlBalances:
    schema = getattr(getattr(store, "names", None), "schema", None)
    projection = SqlBalances(schema=schema, **options)
    assert isinstance(store, TransactionalEventStore)
    async with store.transaction() as tx:
        await projection.create_tables(tx)
    return projection


async def test_applies_each_event_exactly_once_across_restarts(open_tx_store: StoreOpener) -> None:
    async with open_tx_store() as store:
        projection = await _projection(store)
        for i in range(30):
            await store.append(f"acct-{i % 4}", [Credited(amount=i), Noted(text="-")])
        async with ProjectionRunner(store, [projection], batch_size=7) as runner:
            await runner.wait_until_caught_up(timeout=10)
            await store.append("acct-1", [Debited(amount=5)])
            await runner.wait_until_caught_up(timeout=10)
        await store.append("acct-2", [Debited(amount=2)])
        async with ProjectionRunner(store, [projection], batch_size=7) as runner:
            await runner.wait_until_caught_up(timeout=10)
        model = await read_model(store, projection)
        assert model.balances == await expected_balances(store)
        assert model.times == dict.fromkeys(await event_ids(store), 1)


async def test_a_failing_event_rolls_its_batch_back_and_the_others_commit_one_by_one(
    open_tx_store: StoreOpener,
) -> None:
    async with open_tx_store() as store:
        projection = await _projection(store)
        projection.fail_on = {13}
        await store.append("acct-1", [Credited(amount=a) for a in (1, 2, 13, 4, 5)])
        async with ProjectionRunner(store, [projection], policy=Skip(), batch_size=10) as runner:
            await runner.wait_until_caught_up(timeout=10)
            parked = await runner.parked("sql-balances")
            assert (await runner.status())["sql-balances"].lag_events == 0
        assert [p.stream_version for p in parked] == [3]
        model = await read_model(store, projection)
        assert model.balances == {"acct-1": 12}
        assert sorted(model.times.values()) == [1, 1, 1, 1]


async def test_stop_leaves_nothing_of_the_failing_event_and_a_restart_resumes_there(
    open_tx_store: StoreOpener,
) -> None:
    async with open_tx_store() as store:
        projection = await _projection(store)
        projection.fail_on = {13}
        await store.append("acct-1", [Credited(amount=1), Credited(amount=13), Credited(amount=2)])
        async with ProjectionRunner(store, [projection], policy=Stop()) as runner:
            with pytest.raises(ProjectionFailed):
                await runner.wait_until_caught_up(timeout=10)
        assert (await read_model(store, projection)).balances == {"acct-1": 1}
        projection.fail_on = set()
        async with ProjectionRunner(store, [projection]) as runner:
            await runner.wait_until_caught_up(timeout=10)
        model = await read_model(store, projection)
        assert model.balances == {"acct-1": 16}
        assert set(model.times.values()) == {1}


async def test_rebuild_resets_the_tables_in_a_transaction_and_replays(
    open_tx_store: StoreOpener,
) -> None:
    async with open_tx_store() as store:
        projection = await _projection(store)
        for i in range(5):
            await store.append(f"acct-{i}", [Credited(amount=10), Debited(amount=i)])
        calls: list[tuple[int, int]] = []
        async with ProjectionRunner(store, [projection], batch_size=4) as runner:
            await runner.wait_until_caught_up(timeout=10)
            assert await runner.rebuild("sql-balances", progress=lambda *a: calls.append(a)) == 10
            await runner.wait_until_caught_up(timeout=10)
        assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]
        model = await read_model(store, projection)
        assert model.balances == await expected_balances(store)
        assert set(model.times.values()) == {1}


async def test_two_runners_of_one_projection_never_apply_an_event_twice(
    open_tx_store: StoreOpener,
) -> None:
    """The checkpoint guard: a runner whose checkpoint moved under it starts again from it."""
    async with open_tx_store() as store, open_tx_store() as other:
        first = await _projection(store, worker="first")
        second = SqlBalances(schema=first.prefix.strip('".') or None, worker="second")
        rng = random.Random(7)

        async def write() -> None:
            for i in range(60):
                await store.append(f"acct-{rng.randrange(5)}", [Credited(amount=i)])
                if i % 10 == 0:
                    await anyio.sleep(0.01)

        async with (
            ProjectionRunner(store, [first], batch_size=3) as one,
            ProjectionRunner(other, [second], batch_size=3) as two,
        ):
            await write()
            await one.wait_until_caught_up(timeout=20)
            await two.wait_until_caught_up(timeout=20)
        model = await read_model(store, first)
        assert model.balances == await expected_balances(store)
        assert model.times == dict.fromkeys(await event_ids(store), 1)


async def test_a_transactional_projection_needs_a_store_with_transactions() -> None:
    class NoTransactions:
        """A store that is not a TransactionalEventStore."""

    with pytest.raises(ProjectionConfigurationError, match="transaction"):
        ProjectionRunner(NoTransactions(), [SqlBalances()])  # type: ignore[arg-type]
