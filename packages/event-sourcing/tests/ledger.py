"""A small ledger domain the projection tests share, and read models over it."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

from uno.event_sourcing import Projection, TransactionalProjection, handles, register_types
from uno.event_storage import ClosableEventStore
from uno.events import (
    Event,
    EventRegistry,
    EventStore,
    RecordedEvent,
    StoreTransaction,
    TransactionalEventStore,
)


class Credited(Event):
    event_type = "ledger.Credited"
    amount: int


class Debited(Event):
    event_type = "ledger.Debited"
    amount: int


class Noted(Event):
    """An event the ledger read models ignore."""

    event_type = "ledger.Noted"
    text: str


StoreOpener = Callable[[], AbstractAsyncContextManager[ClosableEventStore]]
"""Opens a store (the ``open_store`` fixtures give one per backend)."""


def ledger_registry() -> EventRegistry:
    """Return a registry with the ledger's events and uno.event_sourcing's own."""
    registry = register_types(EventRegistry())
    registry.register(Credited, Debited, Noted)
    return registry


class Balances(Projection):
    """Balances by stream, in memory; counts how often each event was applied."""

    name = "balances"

    def __init__(self) -> None:
        self.balances: dict[str, int] = defaultdict(int)
        self.applied: Counter[str] = Counter()

    @handles
    async def credited(self, event: RecordedEvent[Credited]) -> None:
        self.balances[event.stream_id] += event.data.amount
        self.applied[str(event.event_id)] += 1

    @handles
    async def debited(self, event: RecordedEvent[Debited]) -> None:
        self.balances[event.stream_id] -= event.data.amount
        self.applied[str(event.event_id)] += 1

    async def reset(self) -> None:
        self.balances.clear()
        self.applied.clear()


class SqlBalances(TransactionalProjection):
    """Balances in SQL tables of the event store's database, written in the store's transaction.

    ``applied`` counts how often each event was applied (exactly once is 1),
    and records which worker applied it. Works on SQLite (``tx.run``) and
    PostgreSQL (``tx.connection``, tables in ``schema``).
    """

    name = "sql-balances"

    def __init__(self, *, schema: str | None = None, worker: str = "") -> None:
        self.prefix = f'"{schema}".' if schema else ""
        self.worker = worker
        self.fail_on: set[int] = set()

    async def execute(self, tx: StoreTransaction, sql: str, params: Sequence[object] = ()) -> None:
        """Run one statement in ``tx`` (written with ``%s`` placeholders)."""
        run = getattr(tx, "run", None)
        if run is not None:
            statement = sql.replace("%s", "?")
            await run(lambda connection: connection.execute(statement, params))
        else:
            await cast(Any, tx).connection.execute(sql, params)

    async def create_tables(self, tx: StoreTransaction) -> None:
        """Create the read model's tables if they are missing."""
        p = self.prefix
        await self.execute(
            tx,
            f"CREATE TABLE IF NOT EXISTS {p}rm_applied (event_id TEXT PRIMARY KEY, "
            "times INTEGER NOT NULL, stream_id TEXT NOT NULL, position BIGINT NOT NULL, "
            "worker TEXT NOT NULL)",
        )
        await self.execute(
            tx,
            f"CREATE TABLE IF NOT EXISTS {p}rm_balances "
            "(stream_id TEXT PRIMARY KEY, amount BIGINT NOT NULL)",
        )

    async def _record(
        self, event: RecordedEvent[Credited | Debited], tx: StoreTransaction, amount: int
    ) -> None:
        if event.data.amount in self.fail_on:
            raise ValueError(f"cannot take {event.data.amount}")
        p = self.prefix
        await self.execute(
            tx,
            f"INSERT INTO {p}rm_applied AS t VALUES (%s, 1, %s, %s, %s) "
            "ON CONFLICT (event_id) DO UPDATE SET times = t.times + 1",
            (str(event.event_id), event.stream_id, event.global_position, self.worker),
        )
        await self.execute(
            tx,
            f"INSERT INTO {p}rm_balances AS t VALUES (%s, %s) "
            "ON CONFLICT (stream_id) DO UPDATE SET amount = t.amount + excluded.amount",
            (event.stream_id, amount),
        )

    @handles
    async def credited(self, event: RecordedEvent[Credited], tx: StoreTransaction) -> None:
        await self._record(event, tx, event.data.amount)

    @handles
    async def debited(self, event: RecordedEvent[Debited], tx: StoreTransaction) -> None:
        await self._record(event, tx, -event.data.amount)

    async def reset(self, tx: StoreTransaction) -> None:
        await self.execute(tx, f"DELETE FROM {self.prefix}rm_applied")
        await self.execute(tx, f"DELETE FROM {self.prefix}rm_balances")


async def fetch_all(tx: StoreTransaction, sql: str) -> list[tuple[Any, ...]]:
    """Return the rows of one query run in ``tx`` (SQLite or PostgreSQL)."""
    run = getattr(tx, "run", None)
    if run is not None:
        rows: list[tuple[Any, ...]] = await run(lambda c: c.execute(sql).fetchall())
        return rows
    cursor = await cast(Any, tx).connection.execute(sql)
    return list(await cursor.fetchall())


async def read_model(store: EventStore, projection: SqlBalances) -> SqlReadModel:
    """Return what ``projection``'s tables hold: balances, and times applied by event id."""
    assert isinstance(store, TransactionalEventStore)
    p = projection.prefix
    async with store.transaction() as tx:
        balances = await fetch_all(tx, f"SELECT stream_id, amount FROM {p}rm_balances")
        applied = await fetch_all(tx, f"SELECT event_id, times, worker FROM {p}rm_applied")
    return SqlReadModel(
        balances={s: int(a) for s, a in balances if a},
        times={e: int(t) for e, t, _ in applied},
        workers={e: w for e, _, w in applied},
    )


@dataclass(frozen=True)
class SqlReadModel:
    balances: dict[str, int]
    times: dict[str, int]
    workers: dict[str, str]


async def expected_balances(store: EventStore) -> dict[str, int]:
    """Return the balances a full replay of the log gives (streams with a zero balance left out)."""
    balances: dict[str, int] = defaultdict(int)
    async for event in store.read_all():
        if isinstance(event.data, Credited):
            balances[event.stream_id] += event.data.amount
        elif isinstance(event.data, Debited):
            balances[event.stream_id] -= event.data.amount
    return {s: a for s, a in balances.items() if a}


async def event_ids(store: EventStore) -> set[str]:
    """Return the ids of the log's Credited and Debited events."""
    return {
        str(e.event_id)
        async for e in store.read_all(event_types=["ledger.Credited", "ledger.Debited"])
    }
