"""The PostgreSQL read fence: only this store's appends in flight hold readers back.

Readers read below the oldest block an append still holds (schema version 6).
These tests hold transactions open on other connections, in this database and
in another, cancel appends half-way, and run many writers with rollbacks and
cancellations against tailing subscribers.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg
import pytest

from uno.event_storage.exceptions import StoreConfigurationError, StoreUnavailable
from uno.event_storage.postgres import FenceStatus, PostgresEventStore, _store
from uno.event_storage.postgres._migrations import MIGRATIONS
from uno.event_storage.testing import MoneyDeposited, contract_registry, postgres_url
from uno.events import ANY, Event, EventRegistry, NewEvent, RecordedEvent, WrongExpectedVersion

__all__ = ["postgres_url"]

FAST = 1.0  # seconds: what "not delayed" means on a loaded 2-core machine


@pytest.fixture
def registry() -> EventRegistry:
    return contract_registry()


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"uno_test_{uuid.uuid4().hex[:12]}"
    yield name
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def store(
    registry: EventRegistry, schema: str, postgres_url: str
) -> AsyncIterator[PostgresEventStore]:
    opened = await PostgresEventStore.from_url(
        postgres_url, registry=registry, schema=schema, auto_migrate=True, pool_max_size=20
    )
    async with opened:
        yield opened


def other_database(url: str) -> str:
    """The same server's ``postgres`` database: a transaction there is in another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres"))


async def read(store: PostgresEventStore) -> list[RecordedEvent[Event]]:
    with anyio.fail_after(FAST):
        return [e async for e in store.read_all()]


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["this database", "another database"])
async def test_a_transaction_that_appends_nothing_does_not_delay_readers(
    store: PostgresEventStore, postgres_url: str, where: str
) -> None:
    url = postgres_url if where == "this database" else other_database(postgres_url)
    async with await psycopg.AsyncConnection.connect(url) as other:
        await other.execute("SELECT pg_current_xact_id()")  # holds an id, stays idle in it
        started = time.monotonic()
        result = await store.append("s", [MoneyDeposited(amount=1)])
        events = await read(store)
        assert [e.global_position for e in events] == [result.global_position]
        assert await store.log_position() == result.global_position
        assert await store.count_events() == 1
        assert time.monotonic() - started < FAST
        status = await store.fence_status()
        assert status.held is False
        assert status.pid is None
        assert status.position > result.global_position


@pytest.mark.anyio
async def test_an_open_append_holds_back_only_what_comes_after_it(
    store: PostgresEventStore,
) -> None:
    before = await store.append("before", [MoneyDeposited(amount=1)])
    async with store.transaction() as tx:
        held = await tx.append("slow", [MoneyDeposited(amount=2)])
        after = await store.append("fast", [MoneyDeposited(amount=3)])
        assert [e.global_position for e in await read(store)] == [before.global_position]
        assert await store.log_position() == before.global_position
        assert await store.count_events(after=before.global_position) == 0
        status = await store.fence_status()
        assert status.held is True
        assert status.pid == tx.connection.info.backend_pid
        assert status.position == held.global_position
        assert status.state == "idle in transaction"
        assert status.transaction_age is not None
        assert status.transaction_age >= 0
        assert status.transaction_started is not None
        assert status.query_started is not None
    events = await read(store)
    assert [e.global_position for e in events] == [
        before.global_position,
        held.global_position,
        after.global_position,
    ]
    assert await store.count_events(after=before.global_position) == 2
    assert (await store.fence_status()).held is False


@pytest.mark.anyio
async def test_a_rolled_back_append_releases_readers_and_leaves_nothing(
    store: PostgresEventStore,
) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with store.transaction() as tx:
            await tx.append("gone", [MoneyDeposited(amount=1)])
            later = await store.append("kept", [MoneyDeposited(amount=2)])
            raise Abort
    events = await read(store)
    assert [(e.stream_id, e.global_position) for e in events] == [("kept", later.global_position)]


@pytest.mark.anyio
@pytest.mark.parametrize("aborted", [False, True])
async def test_an_announcement_without_a_block_in_an_idle_transaction_is_ignored(
    store: PostgresEventStore, postgres_url: str, aborted: bool
) -> None:
    """An append cancelled between its announcement and its block's lock holds readers no longer.

    Its transaction (aborted, or caught in a savepoint and idle) is not taking a
    block: the fence waits only for a backend that is running a statement.
    """
    key = store.names.tag << 11
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        await other.execute("SELECT pg_advisory_xact_lock_shared(%s, 0)", [key])
        if aborted:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await other.execute("SELECT 1 / 0")
        result = await store.append("s", [MoneyDeposited(amount=1)])
        assert [e.global_position for e in await read(store)] == [result.global_position]


@pytest.mark.anyio
async def test_readers_wait_for_a_backend_between_announcement_and_block(
    store: PostgresEventStore, postgres_url: str
) -> None:
    """A running statement that announced an append but has no block yet makes readers wait."""
    key = store.names.tag << 11
    result = await store.append("s", [MoneyDeposited(amount=1)])
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:

        async def announce_and_dawdle() -> None:
            await other.execute("SELECT pg_advisory_xact_lock_shared(%s, 0), pg_sleep(0.6)", [key])

        async with anyio.create_task_group() as group:
            group.start_soon(announce_and_dawdle)
            await anyio.sleep(0.2)  # the statement runs
            started = time.monotonic()
            events = [e async for e in store.read_all()]
            waited = time.monotonic() - started
        assert [e.global_position for e in events] == [result.global_position]
        assert waited >= 0.2


@pytest.mark.anyio
async def test_cancelled_appends_leave_no_lock_behind(
    store: PostgresEventStore, postgres_url: str
) -> None:
    """Appends cancelled by statement_timeout at random points leave readers free."""
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        bound = store.using(conn)
        for attempt in range(30):
            await conn.execute(f"SET LOCAL statement_timeout = '{1 + attempt % 3}ms'")
            # statement_timeout cancels it on the server: the store reports it unavailable.
            with contextlib.suppress(StoreUnavailable):
                await bound.append(f"s-{attempt}", [MoneyDeposited(amount=n) for n in range(50)])
            await conn.rollback()
    result = await store.append("after", [MoneyDeposited(amount=1)])
    events = await read(store)
    assert [e.stream_id for e in events] == ["after"]
    assert events[0].global_position == result.global_position
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
            "AND classid::bigint >> 11 = %s",
            [store.names.tag],
        )
        assert await cursor.fetchone() == (0,)


@pytest.mark.anyio
async def test_a_repeatable_read_transaction_cannot_read_the_log(
    store: PostgresEventStore, postgres_url: str
) -> None:
    await store.append("s", [MoneyDeposited(amount=1)])
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        bound = store.using(conn)
        with pytest.raises(StoreConfigurationError, match="READ COMMITTED"):
            [e async for e in bound.read_all()]


@pytest.mark.anyio
async def test_a_long_hold_is_logged_with_its_backend(
    registry: EventRegistry, schema: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    opened = await PostgresEventStore.from_url(
        postgres_url,
        registry=registry,
        schema=schema,
        auto_migrate=True,
        fence_warning_after=0.2,
        poll_interval=0.05,
    )
    caplog.set_level(logging.WARNING, logger="uno.event_storage.postgres")
    async with opened as store, store.transaction() as tx:
        await tx.append("slow", [MoneyDeposited(amount=1)])
        await store.append("fast", [MoneyDeposited(amount=2)])
        pid = tx.connection.info.backend_pid
        async with store.subscribe() as subscription:
            with anyio.move_on_after(1.5):
                async for _ in subscription:
                    pytest.fail("the open append holds every event back")
    warnings = [r for r in caplog.records if "held at position" in r.getMessage()]
    assert len(warnings) == 1, "one warning per holder, not one per look"
    assert warnings[0].__dict__["pid"] == pid
    assert f"pg_terminate_backend({pid})" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_migration_6_keeps_events_positions_and_checkpoints(
    registry: EventRegistry, schema: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "MIGRATIONS", MIGRATIONS[:5])
    async with await PostgresEventStore.from_url(
        postgres_url, registry=registry, schema=schema, auto_migrate=True
    ) as old:
        assert await old.schema_version() == 5
        first = await old.append("s", [MoneyDeposited(amount=1), MoneyDeposited(amount=2)])
        await old.save_checkpoint("projector", first.global_position)
    monkeypatch.undo()
    async with await PostgresEventStore.from_url(
        postgres_url, registry=registry, schema=schema, auto_migrate=True
    ) as new:
        assert await new.schema_version() == 6
        later = await new.append("s", [MoneyDeposited(amount=3)], expected_version=2)
        assert later.global_position > first.global_position
        events = await read(new)
        assert [e.data for e in events] == [MoneyDeposited(amount=n) for n in (1, 2, 3)]
        assert await new.load_checkpoint("projector") == first.global_position
        after_checkpoint = [e async for e in new.read_all(after=first.global_position)]
        assert [e.stream_version for e in after_checkpoint] == [3]


@pytest.mark.anyio
async def test_a_transaction_s_appends_share_a_block_while_it_has_room(
    store: PostgresEventStore,
) -> None:
    async with store.transaction() as tx:
        one = await tx.append("a", [MoneyDeposited(amount=1)])
        two = await tx.append("b", [MoneyDeposited(amount=2), MoneyDeposited(amount=3)])
    assert two.global_position == one.global_position + 2
    three = await store.append("c", [MoneyDeposited(amount=4)])
    assert three.global_position >> 20 > one.global_position >> 20


def _status_from(position: int, *, pid: int | None, waiting: bool) -> FenceStatus:
    return FenceStatus.from_row((position, pid, None, None, None, None, waiting))


def test_a_status_without_a_holder_is_never_held() -> None:
    assert _status_from(5 << 20, pid=None, waiting=True).held is False
    assert _status_from(5 << 20, pid=42, waiting=True).held is True
    assert _status_from(5 << 20, pid=42, waiting=False).held is False


# -- the torture run --------------------------------------------------------------


class Abort(Exception):
    """Raised in a unit of work to roll it back."""


class Torture:
    """Writers that append alone, after other writes, roll back and get cancelled."""

    def __init__(self, store: PostgresEventStore, seed: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.committed: set[uuid.UUID] = set()
        self.rolled_back: set[uuid.UUID] = set()

    async def writer(self, number: int) -> None:
        local = random.Random(self.rng.random())
        for step in range(20):
            stream = f"shared-{local.randrange(4)}" if local.random() < 0.6 else f"own-{number}"
            events = [
                NewEvent(data=MoneyDeposited(amount=step)) for _ in range(local.randint(1, 3))
            ]
            kind = local.random()
            try:
                if kind < 0.35:
                    version = await self.store.stream_version(stream) or 0
                    await self.store.append(stream, events, expected_version=version)
                    self.committed.update(e.event_id for e in events)
                elif kind < 0.8:
                    await self.unit_of_work(local, number, stream, events)
                else:  # cancelled at a random point: committed or not, the log says
                    with anyio.move_on_after(local.random() / 100):
                        async with self.store.transaction() as tx:
                            await tx.append(stream, events, expected_version=ANY)
                            await anyio.sleep(local.random() / 100)
            except WrongExpectedVersion:
                pass

    async def unit_of_work(
        self, local: random.Random, number: int, stream: str, events: list[NewEvent]
    ) -> None:
        """Write a table first (holding a transaction id), then append; maybe roll back."""
        ids = {e.event_id for e in events}
        try:
            async with self.store.transaction() as tx:
                await tx.connection.execute(
                    self.store.names.render("INSERT INTO {schema}.side VALUES (%s, %s)"),
                    [number, len(ids)],
                )
                await anyio.sleep(local.random() / 200)
                await tx.append(stream, events, expected_version=ANY)
                await anyio.sleep(local.random() / 200)
                self.maybe_abort(local)
        except Abort:
            self.rolled_back.update(ids)
        else:
            self.committed.update(ids)

    @staticmethod
    def maybe_abort(local: random.Random) -> None:
        if local.random() < 0.3:
            raise Abort


async def tail(
    store: PostgresEventStore, into: list[RecordedEvent[Event]], caught_up: anyio.Event
) -> None:
    """Follow the log; once ``caught_up`` is set, stop at the log's end then."""
    async with store.subscribe() as subscription:
        async for event in subscription:
            into.append(event)
            if caught_up.is_set() and event.global_position >= await store.log_position():
                return


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2])
async def test_writers_with_rollbacks_cancellations_and_other_writes_never_skip(
    store: PostgresEventStore, postgres_url: str, seed: int
) -> None:
    """12 writers, 3 tailing subscribers: every subscriber sees exactly the final log.

    Writers append alone, in transactions that first write a table of their
    own (so they hold a transaction id long before they append), roll back at
    random, and are cancelled at random points (so whether an append
    committed is not known to the test: the subscribers must agree with the
    log either way). Meanwhile an unrelated transaction stays open.
    """
    torture = Torture(store, seed)
    async with store.transaction() as setup:
        await setup.connection.execute(
            store.names.render("CREATE TABLE {schema}.side (writer int, n int)")
        )
    seen: list[list[RecordedEvent[Event]]] = [[], [], []]
    async with await psycopg.AsyncConnection.connect(postgres_url) as unrelated:
        await unrelated.execute("SELECT pg_current_xact_id()")  # open all along
        caught_up = anyio.Event()
        with anyio.fail_after(60):
            async with anyio.create_task_group() as subscribers:
                for into in seen:
                    subscribers.start_soon(tail, store, into, caught_up)
                async with anyio.create_task_group() as writers:
                    for number in range(12):
                        writers.start_soon(torture.writer, number)
                await store.append("last", [MoneyDeposited(amount=0)])  # wakes every tail
                caught_up.set()
    log = [e async for e in store.read_all()]
    ids = [e.event_id for e in log]
    assert len(ids) == len(set(ids))
    assert torture.committed <= set(ids)
    assert torture.committed, "some appends committed"
    assert torture.rolled_back, "some units of work rolled back"
    assert not torture.rolled_back & set(ids)
    for into in seen:
        assert [e.event_id for e in into] == ids, "a subscriber skipped, repeated or reordered"
    versions: dict[str, int] = defaultdict(int)
    for event in log:
        assert event.stream_version == versions[event.stream_id] + 1
        versions[event.stream_id] = event.stream_version
    assert [e.global_position for e in log] == sorted(e.global_position for e in log)
