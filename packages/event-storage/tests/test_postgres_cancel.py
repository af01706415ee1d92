"""Cancelled work inside a PostgreSQL transaction rolls back and keeps its pooled connection."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest

from uno.event_storage.postgres import PostgresEventStore
from uno.event_storage.testing import MoneyDeposited, contract_registry, postgres_url
from uno.events import ANY

__all__ = ["postgres_url"]


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresEventStore]:
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    opened = await PostgresEventStore.from_url(
        postgres_url,
        registry=contract_registry(),
        schema=schema,
        auto_migrate=True,
        pool_min_size=2,
        pool_max_size=4,
    )
    async with opened:
        yield opened
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.anyio
async def test_cancelled_units_of_work_roll_back_and_keep_their_connections(
    store: PostgresEventStore,
) -> None:
    """80 units of work cancelled at random points: all-or-nothing, and no connection lost.

    Before, psycopg closed the connection of almost every one (anyio cancels
    the rollback too, and psycopg closes a connection whose cancelled statement
    it could not wait for): a burst of client disconnects emptied the pool.
    """
    rng = random.Random(7)
    before = store._pool.get_stats()
    for unit in range(80):
        with anyio.move_on_after(rng.uniform(0.001, 0.02)):
            async with store.transaction() as tx:
                for n in range(5):
                    await tx.append(
                        f"unit-{unit}", [MoneyDeposited(amount=n)], expected_version=ANY
                    )
                    await tx.read_stream(f"unit-{unit}")
    stats = store._pool.get_stats()
    assert stats.get("returns_bad", 0) == before.get("returns_bad", 0)
    assert stats.get("connections_num", 0) - before.get("connections_num", 0) <= 2
    lengths = [len(await store.read_stream(f"unit-{unit}")) for unit in range(80)]
    assert set(lengths) <= {0, 5}
    assert 0 in lengths, "some units should have been cancelled"
    assert 5 in lengths, "some units should have committed"


@pytest.mark.anyio
async def test_a_cancelled_read_keeps_its_connection(store: PostgresEventStore) -> None:
    await store.append_streams([])  # nothing: the store is open and idle
    for stream in range(20):
        await store.append(f"s-{stream}", [MoneyDeposited(amount=n) for n in range(50)])
    before = store._pool.get_stats()
    rng = random.Random(3)
    for _ in range(40):
        with anyio.move_on_after(rng.uniform(0.0001, 0.005)):
            [e async for e in store.read_all(batch_size=100)]
    stats = store._pool.get_stats()
    assert stats.get("returns_bad", 0) == before.get("returns_bad", 0)
    assert len([e async for e in store.read_all()]) == 1000
