"""A TransactionalProjection writes documents in its checkpoint's transaction (SQLite, PostgreSQL).

uno.cqrs does not import the event store: ``repository.within(tx)`` takes the
store's transaction through a structural protocol. These tests use the real
stores and runner of uno.event_storage and uno.event_sourcing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from uno.cqrs.read_models import (
    PostgresTransactionScope,
    ReadModelConfigurationError,
    RepositoryBase,
    SQLiteTransactionScope,
    open_repository,
)
from uno.event_sourcing import (
    ProjectionFailed,
    ProjectionRunner,
    Stop,
    TransactionalProjection,
    handles,
    register_types,
)
from uno.event_storage import ClosableEventStore, open_event_store
from uno.event_storage.testing import postgres_url
from uno.events import (
    Event,
    EventRegistry,
    RecordedEvent,
    StoreTransaction,
    TransactionalEventStore,
)

__all__ = ["postgres_url"]  # the fixture

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Deposited(Event):
    event_type = "rm_test.Deposited"
    amount: int


class Balance(BaseModel):
    id: str
    amount: int = 0
    positions: list[int] = []  # every global position applied: exactly once means no repeats


class Balances(TransactionalProjection):
    """Balance documents, upserted through the store's transaction."""

    name = "balance-documents"

    def __init__(self, repository: Any) -> None:
        self.repository = repository
        self.fail_on: set[int] = set()

    @handles
    async def deposited(self, event: RecordedEvent[Deposited], tx: StoreTransaction) -> None:
        balances = self.repository.within(tx)
        found = await balances.get(event.stream_id) or Balance(id=event.stream_id)
        found = Balance(
            id=found.id,
            amount=found.amount + event.data.amount,
            positions=[*found.positions, event.global_position],
        )
        await balances.upsert(found)  # written before the failure below: it must roll back
        if event.data.amount in self.fail_on:
            raise ValueError(f"cannot take {event.data.amount}")

    async def reset(self, tx: StoreTransaction) -> None:
        await self.repository.within(tx).clear()


Setup = Callable[
    [], AbstractAsyncContextManager[tuple[ClosableEventStore, RepositoryBase[Balance]]]
]


@pytest.fixture(params=["sqlite", "postgres"])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    """Open an event store and a repository of ``Balance`` in the same database."""
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        store_url = repo_url = f"sqlite:///{tmp_path / 'app.db'}"
        store_options: dict[str, Any] = {"auto_migrate": True}
        repo_options: dict[str, Any] = {"auto_migrate": True}
    else:
        store_url = repo_url = request.getfixturevalue("postgres_url")
        store_options = {"auto_migrate": True, "schema": schema}
        repo_options = {"auto_migrate": True, "schema": schema}
    registry = register_types(EventRegistry())
    registry.register(Deposited)

    @asynccontextmanager
    async def opened() -> AsyncIterator[tuple[ClosableEventStore, RepositoryBase[Balance]]]:
        async with (
            open_event_store(
                store_url, registry=registry, poll_interval=0.05, **store_options
            ) as store,
            open_repository(repo_url, Balance, **repo_options) as balances,
        ):
            yield store, balances

    try:
        yield opened
    finally:
        if request.param == "postgres":
            url = request.getfixturevalue("postgres_url")
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _positions(store: ClosableEventStore) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    async for event in store.read_all():
        if isinstance(event.data, Deposited):
            found.setdefault(event.stream_id, []).append(event.global_position)
    return found


async def test_the_store_transactions_satisfy_the_protocols(setup: Setup) -> None:
    async with setup() as (store, _):
        assert isinstance(store, TransactionalEventStore)
        async with store.transaction() as tx:
            assert isinstance(tx, SQLiteTransactionScope | PostgresTransactionScope)


async def test_documents_and_checkpoint_commit_together_across_restarts(setup: Setup) -> None:
    async with setup() as (store, balances):
        projection = Balances(balances)
        for i in range(20):
            await store.append(f"acct-{i % 3}", [Deposited(amount=i)])
        async with ProjectionRunner(store, [projection], batch_size=6) as runner:
            await runner.wait_until_caught_up(timeout=20)
        await store.append("acct-1", [Deposited(amount=100)])
        async with ProjectionRunner(store, [projection], batch_size=6) as runner:
            await runner.wait_until_caught_up(timeout=20)
        expected = await _positions(store)
        documents = {b.id: b for b in await balances.query().all()}
        assert {k: d.positions for k, d in documents.items()} == expected
        assert documents["acct-1"].amount == sum(range(1, 20, 3)) + 100
        checkpoint = await store.load_checkpoint("balance-documents")
        assert checkpoint == max(p for ps in expected.values() for p in ps)


async def test_a_failure_mid_batch_rolls_back_documents_with_the_checkpoint(setup: Setup) -> None:
    """The event that fails wrote its document first; nothing of it stays, and a restart
    applies every event exactly once."""
    async with setup() as (store, balances):
        projection = Balances(balances)
        projection.fail_on = {13}
        await store.append("acct", [Deposited(amount=a) for a in (1, 2, 13, 4)])
        async with ProjectionRunner(store, [projection], policy=Stop(), batch_size=10) as runner:
            with pytest.raises(ProjectionFailed):
                await runner.wait_until_caught_up(timeout=20)
        stopped = await balances.get("acct")
        assert stopped is not None
        assert stopped.amount == 3
        checkpoint = await store.load_checkpoint("balance-documents")
        assert checkpoint == stopped.positions[-1]  # the read model and the checkpoint agree
        projection.fail_on = set()
        async with ProjectionRunner(store, [projection]) as runner:
            await runner.wait_until_caught_up(timeout=20)
        done = await balances.get("acct")
        assert done is not None
        assert done.amount == 20
        assert done.positions == (await _positions(store))["acct"]


async def test_a_rebuild_clears_the_documents_in_a_transaction_and_replays(setup: Setup) -> None:
    async with setup() as (store, balances):
        projection = Balances(balances)
        for i in range(6):
            await store.append(f"acct-{i % 2}", [Deposited(amount=1)])
        async with ProjectionRunner(store, [projection], batch_size=4) as runner:
            await runner.wait_until_caught_up(timeout=20)
            assert await runner.rebuild("balance-documents") == 6
            await runner.wait_until_caught_up(timeout=20)
        documents = {b.id: b.positions for b in await balances.query().all()}
        assert documents == await _positions(store)


async def test_within_refuses_what_is_not_a_transaction_of_its_database(setup: Setup) -> None:
    async with setup() as (_, balances):
        with pytest.raises(ReadModelConfigurationError):
            balances.within(object())  # type: ignore[attr-defined]
