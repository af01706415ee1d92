"""Projections survive kill -9 on PostgreSQL: nothing lost; nothing twice when transactional.

A child process runs two projections of one ledger while this test appends
events: ``crash-tx``, a ``TransactionalProjection`` whose read model commits
with its checkpoint, and ``crash-alo``, an at-least-once ``Projection`` that
writes through its own connection and is idempotent by stream version. The
test kills the child with SIGKILL at random (seeded) moments and restarts it.
After each kill, the transactional read model equals a replay of the log up
to its checkpoint, with every event applied exactly once; the at-least-once
one has every event up to its checkpoint. At the end both equal a full replay.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg import sql

from uno.event_sourcing import register_types
from uno.event_storage import ClosableEventStore, open_event_store
from uno.events import Event, EventRegistry

pytestmark = pytest.mark.anyio


class Credited(Event):
    event_type = "crash.Credited"
    amount: int


class Debited(Event):
    event_type = "crash.Debited"
    amount: int


def registry() -> EventRegistry:
    found = register_types(EventRegistry())
    found.register(Credited, Debited)
    return found


CHILD = textwrap.dedent(
    '''
    """The projection process the crash test kills: runs until killed."""

    import sys

    import anyio
    import psycopg

    from uno.event_storage import open_event_store
    from uno.events import Event, EventRegistry
    from uno.event_sourcing import (
        Projection, ProjectionRunner, TransactionalProjection, handles, register_types,
    )


    class Credited(Event):
        event_type = "crash.Credited"
        amount: int


    class Debited(Event):
        event_type = "crash.Debited"
        amount: int


    URL, SCHEMA = sys.argv[1], sys.argv[2]
    S = f'"{SCHEMA}"'


    class Exact(TransactionalProjection):
        name = "crash-tx"

        async def _apply(self, event, tx, amount):
            await anyio.sleep(0.002)  # widen the window a kill can land in
            conn = tx.connection
            await conn.execute(
                f"INSERT INTO {S}.tx_applied AS t VALUES (%s, 1) "
                "ON CONFLICT (event_id) DO UPDATE SET times = t.times + 1",
                (str(event.event_id),),
            )
            await conn.execute(
                f"INSERT INTO {S}.tx_balances AS t VALUES (%s, %s) "
                "ON CONFLICT (stream_id) DO UPDATE SET amount = t.amount + excluded.amount",
                (event.stream_id, amount),
            )

        @handles(Credited)
        async def credited(self, event, tx):
            await self._apply(event, tx, event.data.amount)

        @handles(Debited)
        async def debited(self, event, tx):
            await self._apply(event, tx, -event.data.amount)


    class AtLeastOnce(Projection):
        """Idempotent by stream version: an event it has seen changes nothing."""

        name = "crash-alo"

        def __init__(self, conn):
            self.conn = conn

        async def _apply(self, event, amount):
            await anyio.sleep(0.002)
            await self.conn.execute(
                f"INSERT INTO {S}.alo_applied AS t VALUES (%s, 1) "
                "ON CONFLICT (event_id) DO UPDATE SET times = t.times + 1",
                (str(event.event_id),),
            )
            await self.conn.execute(
                f"INSERT INTO {S}.alo_balances AS t VALUES (%s, %s, %s) "
                "ON CONFLICT (stream_id) DO UPDATE SET amount = t.amount + excluded.amount, "
                "version = excluded.version WHERE t.version < excluded.version",
                (event.stream_id, amount, event.stream_version),
            )

        @handles(Credited)
        async def credited(self, event):
            await self._apply(event, event.data.amount)

        @handles(Debited)
        async def debited(self, event):
            await self._apply(event, -event.data.amount)


    async def main():
        registry = register_types(EventRegistry())
        registry.register(Credited, Debited)
        async with (
            await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn,
            open_event_store(URL, registry=registry, schema=SCHEMA, poll_interval=0.05) as store,
            ProjectionRunner(
                store, [Exact(), AtLeastOnce(conn)], batch_size=5, checkpoint_interval=0.05
            ),
        ):
            print("running", flush=True)
            await anyio.sleep_forever()


    anyio.run(main)
    '''
)

TABLES = """
CREATE TABLE {s}.tx_applied (event_id text PRIMARY KEY, times int NOT NULL);
CREATE TABLE {s}.tx_balances (stream_id text PRIMARY KEY, amount bigint NOT NULL);
CREATE TABLE {s}.alo_applied (event_id text PRIMARY KEY, times int NOT NULL);
CREATE TABLE {s}.alo_balances (
    stream_id text PRIMARY KEY, amount bigint NOT NULL, version int NOT NULL
);
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def crash_store(postgres_url: str) -> AsyncIterator[tuple[ClosableEventStore, str]]:
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    try:
        async with open_event_store(
            postgres_url, registry=registry(), schema=schema, auto_migrate=True
        ) as store:
            await _rows_none(postgres_url, _q(TABLES, schema))
            yield store, schema
    finally:
        await _rows_none(postgres_url, _q("DROP SCHEMA IF EXISTS {s} CASCADE", schema))


async def _rows_none(url: str, query: sql.Composed) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query)


def _q(template: str, schema: str) -> sql.Composed:
    """Return ``template`` with ``{s}`` replaced by the quoted schema name."""
    return sql.SQL(template).format(s=sql.Identifier(schema))


async def _rows(url: str, query: sql.Composed) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(query)
        return list(await cursor.fetchall())


async def _replay(store: ClosableEventStore, upto: int | None) -> tuple[dict[str, int], set[str]]:
    """Return balances and event ids of a full replay of the log (up to a position)."""
    balances: dict[str, int] = defaultdict(int)
    ids: set[str] = set()
    async for event in store.read_all(event_types=["crash.Credited", "crash.Debited"]):
        if upto is not None and event.global_position > upto:
            break
        ids.add(str(event.event_id))
        data = event.data
        assert isinstance(data, Credited | Debited)
        balances[event.stream_id] += data.amount if isinstance(data, Credited) else -data.amount
    return dict(balances), ids


async def _check_exactly_once(url: str, schema: str, store: ClosableEventStore) -> None:
    """The transactional read model equals a replay up to its checkpoint, each event once."""
    # The checkpoint and the read model, read in one snapshot.
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor = await conn.execute(
            _q("SELECT position FROM {s}.uno_checkpoints WHERE consumer = 'crash-tx'", schema)
        )
        row = await cursor.fetchone()
        checkpoint = int(row[0]) if row else 0
        cursor = await conn.execute(_q("SELECT stream_id, amount FROM {s}.tx_balances", schema))
        balances = {str(k): int(v) for k, v in await cursor.fetchall()}
        cursor = await conn.execute(_q("SELECT event_id, times FROM {s}.tx_applied", schema))
        times = {str(k): int(v) for k, v in await cursor.fetchall()}
    expected, ids = await _replay(store, checkpoint)
    assert times == dict.fromkeys(ids, 1), "an event was applied twice, or lost"
    assert balances == expected


async def _check_nothing_lost(url: str, schema: str, store: ClosableEventStore) -> int:
    """Every event up to the at-least-once checkpoint was applied; return the redeliveries."""
    (row,) = await _rows(
        url,
        _q(
            "SELECT coalesce(max(position), 0) FROM {s}.uno_checkpoints "
            "WHERE consumer = 'crash-alo'",
            schema,
        ),
    )
    _, ids = await _replay(store, int(row[0]))
    rows = await _rows(url, _q("SELECT event_id, times FROM {s}.alo_applied", schema))
    times = {str(k): int(v) for k, v in rows}
    assert ids <= set(times), "the at-least-once projection lost an event"
    return sum(t - 1 for t in times.values())


class _Writer:
    """Appends random ledger events until stopped."""

    def __init__(self, store: ClosableEventStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.stopped = anyio.Event()
        self.written = 0

    async def run(self) -> None:
        rng = self.rng
        while not self.stopped.is_set():
            events: list[Event] = [
                Credited(amount=rng.randrange(1, 100)) for _ in range(rng.randrange(1, 4))
            ]
            if rng.random() < 0.3:
                events.append(Debited(amount=rng.randrange(1, 50)))
            await self.store.append(f"acct-{rng.randrange(12)}", events)
            self.written += len(events)
            await anyio.sleep(rng.uniform(0, 0.01))


def _start(child: Path, url: str, schema: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(child), url, schema], stdout=out, stderr=subprocess.STDOUT
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


async def _until_both_reach(url: str, schema: str, target: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    query = _q(
        "SELECT count(*), min(position) FROM {s}.uno_checkpoints "
        "WHERE consumer IN ('crash-tx', 'crash-alo')",
        schema,
    )
    while True:
        ((count, lowest),) = await _rows(url, query)
        if count == 2 and lowest >= target:
            return
        if time.monotonic() > deadline:
            output = await anyio.Path(log).read_text()
            raise AssertionError(f"the projections did not catch up: {output[-3000:]}")
        await anyio.sleep(0.1)


async def _crash_run(
    url: str, schema: str, store: ClosableEventStore, tmp_path: Path, kills: int
) -> None:
    child, log = tmp_path / "projection_child.py", tmp_path / "child.log"
    child.write_text(CHILD)
    rng = random.Random(20260501 + kills)
    writer = _Writer(store, rng)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer.run)
        for _ in range(kills):
            process = _start(child, url, schema, log)
            try:
                await anyio.sleep(rng.uniform(0.7, 1.5))  # start-up takes ~0.6 s of it
            finally:
                _kill(process)
            await _check_exactly_once(url, schema, store)
            await _check_nothing_lost(url, schema, store)
        writer.stopped.set()
    assert writer.written > 0
    process = _start(child, url, schema, log)
    try:
        await _until_both_reach(url, schema, await store.log_position(), log)
    finally:
        _kill(process)
    await _check_exactly_once(url, schema, store)
    redelivered = await _check_nothing_lost(url, schema, store)
    expected, ids = await _replay(store, None)
    rows = await _rows(url, _q("SELECT stream_id, amount FROM {s}.alo_balances", schema))
    assert {str(k): int(v) for k, v in rows} == expected
    rows = await _rows(url, _q("SELECT event_id FROM {s}.alo_applied", schema))
    assert {str(k) for (k,) in rows} == ids
    print(f"{kills} kills, {len(ids)} events, {redelivered} at-least-once redeliveries")


async def test_projections_survive_three_kills(
    postgres_url: str, crash_store: tuple[ClosableEventStore, str], tmp_path: Path
) -> None:
    store, schema = crash_store
    await _crash_run(postgres_url, schema, store, tmp_path, kills=3)


@pytest.mark.slow
async def test_projections_survive_twenty_kills(
    postgres_url: str, crash_store: tuple[ClosableEventStore, str], tmp_path: Path
) -> None:
    store, schema = crash_store
    await _crash_run(postgres_url, schema, store, tmp_path, kills=20)
