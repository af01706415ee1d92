"""The PostgreSQL backend passes the conformance kit, and keeps its own promises."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import anyio
import psycopg
import psycopg_pool
import pytest

from uno.event_storage import open_event_store
from uno.event_storage.exceptions import (
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
    StreamDeleted,
    TransactionOrderConflict,
)
from uno.event_storage.postgres import (
    PostgresEventStore,
    PostgresLease,
    SeenVersions,
    _appends,
    _connections,
    _store,
)
from uno.event_storage.postgres._append_groups import GroupRefused
from uno.event_storage.postgres._leases import advisory_lock_key
from uno.event_storage.postgres._migrations import MIGRATIONS
from uno.event_storage.postgres._schema import POSITION_BITS, Names
from uno.event_storage.testing import (
    EventStoreContract,
    MoneyDeposited,
    TransactionalStoreContract,
    contract_registry,
    run_concurrent_writers,
)
from uno.events import (
    ANY,
    NO_STREAM,
    AppendResult,
    DuplicateEventId,
    Event,
    EventRegistry,
    JsonSerializer,
    Lease,
    LeaseStore,
    NewEvent,
    RecordedEvent,
    TransactionalEventStore,
    WrongExpectedVersion,
)
from uno.events.exceptions import EventDecodeError


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    """A fresh schema, dropped after the test."""
    name = f"uno_test_{uuid.uuid4().hex[:12]}"
    yield name
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class TestPostgresEventStore(EventStoreContract, TransactionalStoreContract):
    @pytest.fixture
    async def store(
        self, registry: EventRegistry, schema: str, postgres_url: str
    ) -> AsyncIterator[PostgresEventStore]:
        async with open_event_store(
            postgres_url,
            registry=registry,
            schema=schema,
            auto_migrate=True,
            max_event_size=4096,
            pool_max_size=12,
        ) as store:
            assert isinstance(store, PostgresEventStore)
            yield store


async def open_store(
    url: str, registry: EventRegistry, schema: str, **options: Any
) -> PostgresEventStore:
    store = await PostgresEventStore.from_url(url, registry=registry, schema=schema, **options)
    assert isinstance(store, PostgresEventStore)
    return store


@pytest.fixture
def registry() -> EventRegistry:
    return contract_registry()


@pytest.fixture
async def store(
    registry: EventRegistry, schema: str, postgres_url: str
) -> AsyncIterator[PostgresEventStore]:
    store = await open_store(postgres_url, registry, schema, auto_migrate=True, pool_max_size=20)
    async with store:
        yield store


@pytest.fixture
async def one_lane(
    registry: EventRegistry, schema: str, postgres_url: str
) -> AsyncIterator[PostgresEventStore]:
    """A store that runs one append at a time and groups the ones that wait (group_commit=1)."""
    async with await open_store(
        postgres_url, registry, schema, auto_migrate=True, group_commit=1
    ) as one_lane:
        yield one_lane


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_sixteen_writers_two_subscribers_keep_global_order(
    store: PostgresEventStore, seed: int
) -> None:
    """16 writer connections, shared and own streams, conflicts, random rollbacks."""
    report = await run_concurrent_writers(
        store, writers=16, subscribers=2, appends_per_writer=12, seed=seed
    )
    report.check()
    assert report.conflicts > 0, "the scenario should produce version conflicts"
    assert report.rolled_back


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(100, 110))
async def test_sixteen_writers_long_run(store: PostgresEventStore, seed: int) -> None:
    report = await run_concurrent_writers(
        store, writers=16, subscribers=3, appends_per_writer=80, streams=6, seed=seed
    )
    report.check()


@pytest.mark.anyio
async def test_writers_to_other_streams_do_not_wait_for_an_open_transaction(
    store: PostgresEventStore,
) -> None:
    """No table lock: an append to another stream commits while a transaction is open.

    Readers hold that later event back until the open transaction ends, then see
    both in an order that keeps each stream's order: nothing is skipped.
    """
    async with store.transaction() as tx:
        await tx.append("slow", [MoneyDeposited(amount=1)])
        with anyio.fail_after(5):
            other = await store.append("fast", [MoneyDeposited(amount=2)])
        assert [e async for e in store.read_all()] == []
    events = [e async for e in store.read_all()]
    assert [e.stream_id for e in events] == ["slow", "fast"]
    assert events[1].global_position == other.global_position


@pytest.mark.anyio
async def test_an_append_after_other_writes_keeps_the_stream_in_order(
    store: PostgresEventStore,
) -> None:
    """A transaction that wrote first takes its position when it appends, not before.

    Before schema version 6 its position came from its transaction id, older
    than an append to the same stream that committed meanwhile, and the
    append was refused (TransactionOrderConflict).
    """
    async with store.transaction() as tx:
        await tx.save_checkpoint("early-writer", 1)  # this transaction now holds an xid
        first = await store.append("contested", [MoneyDeposited(amount=1)])  # commits meanwhile
        second = await tx.append("contested", [MoneyDeposited(amount=2)])
    assert second.global_position > first.global_position
    events = [e async for e in store.read_all()]
    assert [e.data for e in events] == [MoneyDeposited(amount=1), MoneyDeposited(amount=2)]
    assert await store.load_checkpoint("early-writer") == 1


async def append_then_corrupt(
    store: PostgresEventStore, url: str, column: str, value: bytes
) -> RecordedEvent[Event]:
    """Append two events to stream "s", overwrite ``column`` of the second, return it as stored."""
    await store.append("s", [MoneyDeposited(amount=1), MoneyDeposited(amount=2)])
    (_, second) = await store.read_stream("s")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            store.names.render(f"UPDATE {{events}} SET {column} = %s WHERE global_position = %s"),
            [value, second.global_position],
        )
    return second


@pytest.mark.anyio
async def test_a_row_that_cannot_be_decoded_names_its_position(
    store: PostgresEventStore, postgres_url: str
) -> None:
    second = await append_then_corrupt(store, postgres_url, "data", b'{"amount": "lots"}')
    with pytest.raises(EventDecodeError) as info:
        [e async for e in store.read_all()]
    assert info.value.position == second.global_position
    assert info.value.field == "amount"
    assert str(second.global_position) in str(info.value)


@pytest.mark.anyio
async def test_a_row_whose_metadata_cannot_be_decoded_names_its_position(
    store: PostgresEventStore, postgres_url: str
) -> None:
    second = await append_then_corrupt(store, postgres_url, "metadata", b'{"actor": 5}')
    with pytest.raises(EventDecodeError) as info:
        await store.read_stream("s")
    assert info.value.position == second.global_position
    assert info.value.field == "actor"


@pytest.mark.anyio
async def test_read_all_reads_every_page_in_order_while_fetching_ahead(
    store: PostgresEventStore,
) -> None:
    for n in range(7):
        await store.append(f"s-{n % 3}", [MoneyDeposited(amount=n), MoneyDeposited(amount=-n)])
    every = [e async for e in store.read_all()]
    for batch_size in (1, 2, 3, 14, 15):
        paged = [e async for e in store.read_all(batch_size=batch_size)]
        assert paged == every
    assert [e.global_position for e in every] == sorted(e.global_position for e in every)
    assert [e async for e in store.read_all(after=every[-1].global_position)] == []


@pytest.mark.anyio
async def test_stopping_read_all_early_cancels_the_page_fetched_ahead(
    store: PostgresEventStore,
) -> None:
    for n in range(10):
        await store.append(f"s-{n}", [MoneyDeposited(amount=n)])
    before = asyncio.all_tasks()
    reading = cast("AsyncGenerator[RecordedEvent[Event], None]", store.read_all(batch_size=2))
    async with contextlib.aclosing(reading) as events:
        async for event in events:
            if event.data == MoneyDeposited(amount=2):
                break
    assert asyncio.all_tasks() <= before, "the fetch ahead outlived read_all"
    # The connection it used went back clean: the store reads on.
    assert len([e async for e in store.read_all(batch_size=3)]) == 10
    assert await store.count_events() == 10


@pytest.mark.anyio
async def test_read_all_in_a_transaction_reads_page_by_page(store: PostgresEventStore) -> None:
    for n in range(5):
        await store.append("s", [MoneyDeposited(amount=n)])
    async with store.transaction() as tx:
        seen = []
        async for event in tx.read_all(batch_size=2):
            seen.append(event.data)
            await tx.save_checkpoint("reader", event.global_position)  # the same connection
    assert seen == [MoneyDeposited(amount=n) for n in range(5)]
    assert await store.load_checkpoint("reader") is not None


@pytest.mark.anyio
async def test_an_unreachable_database_raises_store_unavailable(registry: EventRegistry) -> None:
    with pytest.raises(StoreUnavailable) as info:
        await PostgresEventStore.from_url(
            "postgresql://postgres@127.0.0.1:1/test", registry=registry, connect_timeout=1
        )
    assert info.value.code == "event_storage.unavailable"


async def terminate_connections(url: str, application_name: str) -> None:
    """Kill, from another connection, every server connection of ``application_name``."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )


def test_seen_versions_hold_what_was_seen_and_forget_the_oldest_first() -> None:
    seen = SeenVersions(limit=2)
    seen.add("a", 3)
    seen.add("a", 2)  # never lowers what was seen
    assert seen.holds("a", 3)
    assert seen.holds("a", 1)
    assert not seen.holds("a", 4)
    assert not seen.holds("a", 0)
    assert not seen.holds("b", 1)
    seen.add("b", 1)
    seen.add("a", 4)  # a is now the newest
    seen.add("c", 1)
    assert not seen.holds("b", 1)
    assert seen.holds("a", 4)
    assert seen.holds("c", 1)
    seen.forget("a")
    assert not seen.holds("a", 1)


@pytest.mark.anyio
async def test_appends_at_a_version_seen_committed_still_refuse_what_they_must(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    """An append that skips reading the expected event (seen committed) still fails right.

    Another store appends or deletes meanwhile: the append raises
    WrongExpectedVersion or StreamDeleted and stores nothing.
    """
    async with (
        await open_store(postgres_url, registry, schema, auto_migrate=True) as mine,
        await open_store(postgres_url, registry, schema) as other,
    ):
        for stream in ("moved", "erased", "hidden"):
            await mine.append(stream, [MoneyDeposited(amount=n) for n in range(3)])
            assert mine._seen.holds(stream, 3)
        await other.append("moved", [MoneyDeposited(amount=9)], expected_version=3)
        with pytest.raises(WrongExpectedVersion) as info:
            await mine.append("moved", [MoneyDeposited(amount=1)], expected_version=3)
        assert info.value.actual == 4
        await other.delete_stream("erased", hard=True)
        await other.delete_stream("hidden")
        for stream, hard in (("erased", True), ("hidden", False)):
            with pytest.raises(StreamDeleted) as deleted:
                await mine.append(stream, [MoneyDeposited(amount=1)], expected_version=3)
            assert deleted.value.hard is hard
        assert [v for v, _ in await stored_rows(mine, "moved")] == [1, 2, 3, 4]
        assert await stored_rows(mine, "erased") == []
        assert [v for v, _ in await stored_rows(mine, "hidden")] == [1, 2, 3]
        # It works on the path too: the next append at the version seen goes in.
        await mine.read_stream("moved")
        assert mine._seen.holds("moved", 4)
        result = await mine.append("moved", [MoneyDeposited(amount=5)], expected_version=4)
        assert result.stream_version == 5


@pytest.mark.anyio
async def test_appends_that_read_nothing_first_call_the_small_function(
    registry: EventRegistry, schema: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New streams and versions seen committed go to ``append_known``; the rest do not."""
    called: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def recording(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(query, str) and query.startswith("SELECT stream_version, global_position"):
            called.append("known" if "_append_known" in query else "append")
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recording)
    async with (
        await open_store(postgres_url, registry, schema, auto_migrate=True) as mine,
        await open_store(postgres_url, registry, schema) as other,
    ):
        deposit = [MoneyDeposited(amount=1)]
        await mine.append("s", deposit, expected_version=NO_STREAM)  # new: known
        await mine.append("s", deposit, expected_version=1)  # seen: known
        await mine.append("t", deposit, expected_version=0)  # version 0: known
        await mine.append("s", deposit)  # ANY: append
        await other.append("s", deposit, expected_version=3)  # not seen here: append
        async with mine.transaction() as tx:
            await tx.append("t", deposit, expected_version=1)  # in a transaction: append
        assert called == ["known", "known", "known", "append", "append", "append"]
        called.clear()
        with pytest.raises(WrongExpectedVersion):  # taken: known, then the locked path
            await mine.append("t", deposit, expected_version=NO_STREAM)
        assert called == ["known", "append"]
        assert [e.stream_version for e in await mine.read_stream("s")] == [1, 2, 3, 4]
        assert [e.stream_version for e in await mine.read_stream("t")] == [1, 2]


@pytest.mark.anyio
async def test_an_append_of_more_events_than_a_transaction_may_hold_is_refused(
    store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_appends, "_MOST_EVENTS", 2)
    for expected in (NO_STREAM, ANY):
        with pytest.raises(StoreConfigurationError, match="at most 2 events"):
            await store.append(
                "s", [MoneyDeposited(amount=n) for n in range(3)], expected_version=expected
            )
    assert await store.stream_version("s") is None
    await store.append("s", [MoneyDeposited(amount=n) for n in range(2)])
    assert await store.stream_version("s") == 2


def _transaction_of(position: int) -> int:
    """Return the transaction id a global position was taken from."""
    return position >> POSITION_BITS


def _record_refusals(store: PostgresEventStore) -> list[int]:
    """Return the sizes of the store's groups that were refused, as they are."""
    refused: list[int] = []
    together = store._append_together

    async def recording(appends: list[Any]) -> list[AppendResult]:
        try:
            return await together(appends)
        except GroupRefused:
            refused.append(len(appends))
            raise

    assert store._groups is not None
    store._groups._together = recording
    return refused


@pytest.mark.anyio
async def test_appends_that_arrive_while_the_lanes_are_busy_share_a_transaction(
    one_lane: PostgresEventStore,
) -> None:
    store = one_lane
    streams = [f"group-{n}" for n in range(6)]
    results = await asyncio.gather(
        *(
            store.append(
                s,
                [MoneyDeposited(amount=n), MoneyDeposited(amount=-n)],
                expected_version=NO_STREAM if n % 2 else 0,
            )
            for n, s in enumerate(streams)
        )
    )
    # The first took the one lane alone; the five that came meanwhile went together.
    transactions = [_transaction_of(r.global_position) for r in results]
    assert transactions[1:] == [transactions[1]] * 5
    assert transactions[0] != transactions[1]
    for n, (stream, result) in enumerate(zip(streams, results, strict=True)):
        assert result.stream_id == stream
        assert result.stream_version == 2
        events = await store.read_stream(stream)
        assert [(e.stream_version, e.data) for e in events] == [
            (1, MoneyDeposited(amount=n)),
            (2, MoneyDeposited(amount=-n)),
        ]
        assert events[-1].global_position == result.global_position
    log = [e async for e in store.read_all()]
    assert len(log) == 12
    assert sorted(e.global_position for e in log) == [e.global_position for e in log]
    # Appends go alone again once nothing waits.
    again = await store.append(streams[0], [MoneyDeposited(amount=9)], expected_version=2)
    assert again.stream_version == 3


@pytest.mark.anyio
async def test_writers_that_append_again_at_once_go_with_the_next_group(
    one_lane: PostgresEventStore,
) -> None:
    store = one_lane
    """A freed lane waits for the callers it woke: they append again and join its group."""
    positions: list[int] = []

    async def writer(stream: str) -> None:
        for version in range(5):
            result = await store.append(
                stream, [MoneyDeposited(amount=version)], expected_version=version
            )
            positions.append(result.global_position)

    await asyncio.gather(*(writer(f"loop-{n}") for n in range(4)))
    # The first append alone, then the other nineteen four at a time (the last three).
    per_transaction = Counter(_transaction_of(p) for p in positions)
    assert sorted(per_transaction.values()) == [1, 3, 4, 4, 4, 4]
    for n in range(4):
        assert [e.data for e in await store.read_stream(f"loop-{n}")] == [
            MoneyDeposited(amount=v) for v in range(5)
        ]


@pytest.mark.anyio
async def test_a_refused_group_makes_each_append_alone_with_its_own_outcome(
    one_lane: PostgresEventStore,
) -> None:
    store = one_lane
    await store.append("taken", [MoneyDeposited(amount=1)])
    await store.delete_stream("gone")  # never written: deleted all the same
    stored = NewEvent(data=MoneyDeposited(amount=2))
    await store.append("holder", [stored])
    deposit = [MoneyDeposited(amount=3)]
    refused = _record_refusals(store)
    outcomes = await asyncio.gather(
        store.append("first", deposit, expected_version=NO_STREAM),  # takes the lane
        store.append("fine-1", deposit, expected_version=NO_STREAM),
        store.append("taken", deposit, expected_version=NO_STREAM),
        store.append("gone", deposit, expected_version=NO_STREAM),
        store.append("copy", [stored], expected_version=NO_STREAM),
        store.append("fine-2", deposit, expected_version=0),
        return_exceptions=True,
    )
    first, fine_1, taken, gone, copy, fine_2 = outcomes
    assert isinstance(taken, WrongExpectedVersion)
    assert isinstance(gone, StreamDeleted)
    assert not gone.hard
    assert isinstance(copy, DuplicateEventId)
    assert copy.event_ids == (stored.event_id,)
    assert refused == [5]  # the five that waited tried together, then went alone
    fine = {"first": first, "fine-1": fine_1, "fine-2": fine_2}
    for result in fine.values():
        assert isinstance(result, AppendResult)
        assert result.stream_version == 1
    assert await store.stream_version("taken") == 1
    assert await store.stream_version("copy") is None
    assert [e.stream_id async for e in store.read_all()] == [
        "taken",
        "holder",
        *sorted(fine, key=lambda s: cast(AppendResult, fine[s]).global_position),
    ]


@pytest.mark.anyio
async def test_a_group_gives_up_waiting_for_another_transaction_and_its_appends_go_alone(
    one_lane: PostgresEventStore, registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    """A group holds rows of several streams: it never waits long for a lock (no deadlock)."""
    store = one_lane
    other = await open_store(postgres_url, registry, schema)
    deposit = [MoneyDeposited(amount=1)]
    for stream in ("a", "b"):
        await store.append(stream, deposit, expected_version=NO_STREAM)  # seen at version 1
    refused = _record_refusals(store)
    async with other, other.transaction() as tx:
        await tx.append("b", deposit, expected_version=1)  # holds b's version 2, uncommitted
        outcomes = asyncio.gather(
            store.append("c", deposit, expected_version=NO_STREAM),  # takes the lane
            store.append("a", deposit, expected_version=1),  # a's version 2: free
            store.append("b", deposit, expected_version=1),  # b's version 2: the transaction's
            return_exceptions=True,
        )
        # The group of a and b gives up its wait for the open transaction, within
        # its lock timeout; then a commits alone, and b waits alone.
        with anyio.fail_after(5):
            while not refused or await store.stream_version("a") != 2:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert refused == [2]
        assert not outcomes.done()  # b still waits for the transaction
    c, a, b = await outcomes
    assert isinstance(c, AppendResult)
    assert isinstance(a, AppendResult)
    assert a.stream_version == 2
    assert isinstance(b, WrongExpectedVersion)
    assert [e.stream_version for e in await store.read_stream("b")] == [1, 2]


@pytest.mark.anyio
async def test_a_grouped_append_cancelled_while_it_waits_is_dropped_whole(
    one_lane: PostgresEventStore,
) -> None:
    store = one_lane
    batches = {
        f"wait-{n}": [NewEvent(data=MoneyDeposited(amount=m)) for m in range(5)] for n in range(8)
    }
    tasks = [
        asyncio.ensure_future(store.append(s, b, expected_version=NO_STREAM))
        for s, b in batches.items()
    ]
    await asyncio.sleep(0)  # the first holds the lane, the rest wait
    for task in tasks[1::2]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    stored = {e.event_id async for e in store.read_all()}
    for n, (stream, batch) in enumerate(batches.items()):
        ids = {e.event_id for e in batch}
        if n % 2:  # cancelled before its group was sent: dropped, nothing written
            assert isinstance(outcomes[n], asyncio.CancelledError)
            assert not ids & stored, stream
        else:
            assert isinstance(outcomes[n], AppendResult)
            assert ids <= stored, stream
    result = await store.append("after", [MoneyDeposited(amount=1)], expected_version=NO_STREAM)
    assert result.stream_version == 1
    assert store._pool.get_stats().get("requests_errors", 0) == 0


@pytest.mark.anyio
async def test_without_group_commit_every_append_has_a_transaction_of_its_own(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    async with await open_store(
        postgres_url, registry, schema, auto_migrate=True, group_commit=0
    ) as store:
        results = await asyncio.gather(
            *(store.append(f"own-{n}", [MoneyDeposited(amount=n)]) for n in range(6))
        )
        assert len({_transaction_of(r.global_position) for r in results}) == 6


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [-1, True, 1.5, "2"])
async def test_a_bad_group_commit_is_refused(
    registry: EventRegistry, schema: str, postgres_url: str, bad: object
) -> None:
    with pytest.raises(StoreConfigurationError, match="group_commit must be an int >= 0"):
        await open_store(postgres_url, registry, schema, auto_migrate=True, group_commit=bad)


@pytest.mark.anyio
async def test_a_transactions_own_rows_are_never_taken_as_seen_committed(
    store: PostgresEventStore,
) -> None:
    """Rows a transaction wrote and read, then rolled back, leave no gap behind."""
    await store.append("s", [MoneyDeposited(amount=1)])
    with pytest.raises(ZeroDivisionError):
        async with store.transaction() as tx:
            await tx.append("s", [MoneyDeposited(amount=2)], expected_version=1)
            assert [e.stream_version for e in await tx.read_stream("s")] == [1, 2]
            1 / 0  # noqa: B018 (roll back)
    assert not store._seen.holds("s", 2)
    with pytest.raises(WrongExpectedVersion):
        await store.append("s", [MoneyDeposited(amount=3)], expected_version=2)
    assert [v for v, _ in await stored_rows(store, "s")] == [1]


async def stored_rows(store: PostgresEventStore, stream_id: str) -> list[tuple[int, int]]:
    """``(stream_version, global_position)`` of every row of a stream, fences included."""
    async with store._pool.connection() as conn:
        cursor = await conn.execute(
            store.names.render(
                "SELECT stream_version, global_position FROM {events} "
                "WHERE stream_id = %s ORDER BY stream_version"
            ),
            [stream_id],
        )
        return [(int(v), int(p)) for v, p in await cursor.fetchall()]


async def race_a_deletion(
    store: PostgresEventStore, stream: str, hard: bool, rng: random.Random, outcomes: Counter[str]
) -> int:
    """Delete ``stream`` at its version while six tasks append to it; return that version.

    The appenders append until they are refused (``StreamDeleted``).
    """
    deleted_at: list[int] = []

    async def appender() -> None:
        while True:
            await anyio.sleep(rng.random() / 200)  # gaps, or the deleter would starve
            version = await store.stream_version(stream) or 0
            try:
                await store.append(stream, [MoneyDeposited(amount=1)], expected_version=version)
                outcomes["appended"] += 1
            except WrongExpectedVersion:
                outcomes["conflicts"] += 1
            except StreamDeleted:
                outcomes["refused"] += 1
                return

    async def deleter() -> None:
        await anyio.sleep(rng.random() / 50)
        while True:
            version = await store.stream_version(stream) or 0
            try:
                await store.delete_stream(stream, hard=hard, expected_version=version)
            except WrongExpectedVersion:
                outcomes["deletion conflicts"] += 1
            else:
                deleted_at.append(version)
                return

    async with anyio.create_task_group() as tasks:
        for _ in range(6):
            tasks.start_soon(appender)
        tasks.start_soon(deleter)
    return deleted_at[0]


@pytest.mark.anyio
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
async def test_a_deletion_that_lock_free_appends_race_keeps_its_word(
    store: PostgresEventStore, hard: bool
) -> None:
    """Appends that take no lock race a deletion with an expected version.

    An erased stream keeps no event (none slips in behind the erasure); a soft
    deleted one ends at the version its deletion expected; appends after the
    deletion are refused; no fence row is left.
    """
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    for round_ in range(10):
        stream = f"race-{round_}"
        await store.append(stream, [MoneyDeposited(amount=0)])
        with anyio.fail_after(60):
            deleted_at = await race_a_deletion(store, stream, hard, rng, outcomes)
        rows = await stored_rows(store, stream)
        if hard:
            assert rows == [], f"{len(rows)} events of {stream} outlived its erasure"
        else:
            assert [v for v, _ in rows] == list(range(1, deleted_at + 1))
            assert [p for _, p in rows] == sorted(p for _, p in rows)
    async with store._pool.connection() as conn:
        cursor = await conn.execute(
            store.names.render("SELECT count(*) FROM {events} WHERE global_position < 0")
        )
        assert await cursor.fetchone() == (0,), "a deletion left its fence behind"
    assert outcomes["appended"] > 20, outcomes
    assert outcomes["refused"] == 60, outcomes


@pytest.mark.anyio
async def test_lock_free_and_locked_appends_to_one_hot_stream_keep_its_order(
    store: PostgresEventStore,
) -> None:
    """Exact-version appends (lock-free), ANY appends and transactions on one stream."""
    rng = random.Random(3)
    stored: list[int] = []

    async def writer(number: int) -> None:
        local = random.Random(rng.random())
        for _ in range(15):
            mode = local.choice(["exact", "any", "exact in a transaction", "any in a transaction"])
            expected = ANY if mode.startswith("any") else await store.stream_version("hot") or 0
            try:
                if mode.endswith("transaction"):
                    async with store.transaction() as tx:
                        result = await tx.append(
                            "hot", [MoneyDeposited(amount=number)], expected_version=expected
                        )
                else:
                    result = await store.append(
                        "hot", [MoneyDeposited(amount=number)], expected_version=expected
                    )
            except (WrongExpectedVersion, TransactionOrderConflict):
                continue
            stored.append(result.stream_version)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for number in range(10):
                tasks.start_soon(writer, number)
    rows = await stored_rows(store, "hot")
    assert sorted(stored) == [v for v, _ in rows] == list(range(1, len(rows) + 1))
    assert [p for _, p in rows] == sorted(p for _, p in rows)
    assert len(rows) > 60


async def failed_appends_until_one_succeeds(
    store: PostgresEventStore, stream_id: str, *, pause: float = 0.0
) -> int:
    """Append the stream's second event until it works; return how many attempts failed first."""
    failures = 0
    with anyio.fail_after(20):
        while True:
            try:
                await store.append(stream_id, [MoneyDeposited(amount=2)], expected_version=1)
            except StoreUnavailable:
                failures += 1
                await anyio.sleep(pause)
            else:
                return failures


@pytest.mark.anyio
async def test_the_store_recovers_when_its_connections_are_killed(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    name = f"uno-recovery-{schema}"
    url = f"{postgres_url}?application_name={name}"
    async with await open_store(url, registry, schema, auto_migrate=True, pool_min_size=3) as store:
        await store.append("s", [MoneyDeposited(amount=1)])
        await terminate_connections(postgres_url, name)
        assert await failed_appends_until_one_succeeds(store, "s", pause=0.1) <= 3
        assert [e.stream_version for e in await store.read_stream("s")] == [1, 2]


@pytest.mark.anyio
async def test_the_store_recovers_when_every_connection_it_keeps_is_killed(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    """Dead connections on the store's free-list go back to the pool, which replaces them."""
    name = f"uno-free-list-{schema}"
    url = f"{postgres_url}?application_name={name}"
    async with await open_store(url, registry, schema, auto_migrate=True, notify=False) as store:
        async with anyio.create_task_group() as writers:
            for n in range(4):
                writers.start_soon(store.append, f"s{n}", [MoneyDeposited(amount=1)])
        kept = len(store._connections._free)
        assert kept >= 2
        await terminate_connections(postgres_url, name)
        assert await failed_appends_until_one_succeeds(store, "s0") <= 2
        assert [e.stream_version for e in await store.read_stream("s0")] == [1, 2]


@pytest.mark.anyio
async def test_only_clean_connections_are_kept_and_the_rest_go_back_to_the_pool(
    store: PostgresEventStore,
) -> None:
    """A connection left in a transaction or closed is returned to the pool, never reused."""
    store.notify = False  # no NOTIFY task borrowing connections meanwhile
    await store.append("s", [MoneyDeposited(amount=1)])
    connections = store._connections
    async with connections.borrow() as conn:
        await conn.execute("BEGIN")
    async with connections.borrow() as closed:
        await closed.close()
    assert conn not in [cur.connection for cur, _, _ in connections._free]
    assert closed not in [cur.connection for cur, _, _ in connections._free]
    await store.append("s", [MoneyDeposited(amount=2)], expected_version=1)
    async with store._pool.connection() as back:
        assert back.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert store._pool.get_stats().get("returns_bad", 0) == 1
    assert [e.stream_version for e in await store.read_stream("s")] == [1, 2]


@pytest.mark.anyio
async def test_kept_connections_go_back_to_a_shared_pool_when_idle_or_old_and_on_close(
    registry: EventRegistry, schema: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store holds no more of a shared pool than it uses, and nothing once closed."""
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        postgres_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    try:
        store = PostgresEventStore(registry, pool=pool, schema=schema, notify=False)
        await store.migrate()
        monkeypatch.setattr(_connections, "_IDLE_FOR", 0.05)
        await store.append("s", [MoneyDeposited(amount=1)])
        assert len(store._connections._free) == 1
        await eventually(lambda: not store._connections._free)
        monkeypatch.setattr(_connections, "_KEEP_FOR", 0.0)
        await store.append("s", [MoneyDeposited(amount=2)], expected_version=1)
        assert store._connections._free == []
        monkeypatch.setattr(_connections, "_KEEP_FOR", 30.0)
        async with anyio.create_task_group() as writers:
            for n in range(3):
                writers.start_soon(store.append, f"t{n}", [MoneyDeposited(amount=1)])
        assert store._connections._free
        await store.close()
        assert store._connections._free == []
        await eventually(lambda: all_back(pool.get_stats()))
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
    finally:
        await pool.close()


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait up to 5 seconds for what a background task does."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


def all_back(stats: dict[str, int]) -> bool:
    return stats["pool_available"] == stats["pool_size"]


@pytest.mark.anyio
async def test_a_cancelled_append_is_all_or_nothing_and_the_pool_stays_clean(
    store: PostgresEventStore,
) -> None:
    batches = []
    for attempt in range(30):
        batch = [NewEvent(data=MoneyDeposited(amount=n)) for n in range(50)]
        batches.append(batch)
        with anyio.move_on_after(attempt / 10_000):
            await store.append(f"cancel-{attempt}", batch)
    stored = {e.event_id async for e in store.read_all()}
    for batch in batches:
        ids = {e.event_id for e in batch}
        assert ids <= stored or not ids & stored
    await store.append("after", [MoneyDeposited(amount=1)])
    stats = store._pool.get_stats()
    assert stats.get("requests_errors", 0) == 0


@pytest.mark.anyio
async def test_an_append_cancelled_by_asyncio_itself_is_all_or_nothing(
    store: PostgresEventStore,
) -> None:
    """task.cancel() (as asyncio.wait_for does) is not an anyio cancellation: still atomic."""
    batches = []
    for attempt in range(60):
        batch = [NewEvent(data=MoneyDeposited(amount=n)) for n in range(20)]
        batches.append(batch)
        task = asyncio.ensure_future(store.append(f"native-{attempt}", batch))
        await asyncio.sleep((attempt % 7) / 5_000)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stored = {e.event_id async for e in store.read_all()}
    for batch in batches:
        ids = {e.event_id for e in batch}
        assert ids <= stored or not ids & stored
    result = await store.append("after", [MoneyDeposited(amount=1)])
    assert result.stream_version == 1


@pytest.mark.anyio
async def test_migrations_are_recorded_idempotent_and_safe_in_parallel(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    with pytest.raises(SchemaNotMigrated) as info:
        await open_store(postgres_url, registry, schema)
    assert (info.value.have, info.value.want) == (0, MIGRATIONS[-1][0])
    stores = [
        PostgresEventStore(
            registry,
            pool=psycopg_pool.AsyncConnectionPool(
                postgres_url, open=False, kwargs={"autocommit": True}
            ),
            schema=schema,
            owns_pool=True,
        )
        for _ in range(4)
    ]
    for s in stores:
        await s._pool.open()
    async with anyio.create_task_group() as tasks:
        for s in stores:
            tasks.start_soon(s.migrate)
    await stores[0].migrate()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(stores[0].names.render("SELECT version FROM {migrations}"))
        assert [v for (v,) in await cursor.fetchall()] == [m[0] for m in MIGRATIONS]
    for s in stores:
        await s.close()
    async with await open_store(postgres_url, registry, schema) as reopened:
        assert await reopened.schema_version() == MIGRATIONS[-1][0]


@pytest.mark.anyio
async def test_a_schema_at_version_1_is_upgraded_and_keeps_its_events(
    registry: EventRegistry, schema: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "MIGRATIONS", MIGRATIONS[:1])
    async with await open_store(postgres_url, registry, schema, auto_migrate=True) as old:
        assert await old.schema_version() == 1
        names = old.names
    monkeypatch.undo()
    # An event stored by the version 1 function, called as the release that had it did.
    retried = NewEvent(data=MoneyDeposited(amount=1))
    data = JsonSerializer(registry).encode(retried.data)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            names.render("SELECT * FROM {append}(%s, NULL, 'no_stream', %s, %s, %s, %s, %s)"),
            ["s", [retried.event_id], [MoneyDeposited.event_type], [1], [data], [b""]],
        )

    async with await open_store(postgres_url, registry, schema, auto_migrate=True) as store:
        assert await store.schema_version() == MIGRATIONS[-1][0]
        assert [e.event_id for e in await store.read_stream("s")] == [retried.event_id]
        # The retry of an append stored by the old function is still a no-op.
        again = await store.append("s", [retried], expected_version=NO_STREAM)
        assert again.stream_version == 1
        with pytest.raises(DuplicateEventId):
            await store.append("t", [retried])
        async with store.transaction() as tx:
            await tx.append("s", [MoneyDeposited(amount=2)], expected_version=1)
            await tx.append("s", [retried])  # inside a transaction too: a no-op
            await tx.append("u", [MoneyDeposited(amount=3)])
        positions = [e.global_position async for e in store.read_all()]
        assert len(positions) == 3
        assert positions == sorted(positions)
        assert positions[2] == positions[1] + 1  # one transaction's events follow each other


@pytest.mark.anyio
async def test_stores_with_other_prefixes_share_a_schema_without_seeing_each_other(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    async with (
        await open_store(postgres_url, registry, schema, table_prefix="a_", auto_migrate=True) as a,
        await open_store(postgres_url, registry, schema, table_prefix="b_", auto_migrate=True) as b,
    ):
        await a.append("s", [MoneyDeposited(amount=1)])
        await b.append("s", [MoneyDeposited(amount=2), MoneyDeposited(amount=3)])
        assert [e.data for e in await a.read_stream("s")] == [MoneyDeposited(amount=1)]
        assert len(await b.read_stream("s")) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["Public", "x-y", "1abc", "a" * 41, 'x"; DROP'])
async def test_bad_schema_names_are_rejected(registry: EventRegistry, bad: str) -> None:
    with pytest.raises(StoreConfigurationError):
        Names.of(bad, "uno_")


@pytest.mark.anyio
async def test_another_process_wakes_a_subscription_through_notify(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    async with (
        await open_store(
            postgres_url, registry, schema, auto_migrate=True, poll_interval=60
        ) as reader,
        await open_store(postgres_url, registry, schema) as writer,
        reader.subscribe() as subscription,
    ):

        async def write_soon() -> None:
            await anyio.sleep(0.3)
            await writer.append("s", [MoneyDeposited(amount=7)])

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(write_soon)
                async for event in subscription:
                    assert event.data == MoneyDeposited(amount=7)
                    break


@pytest.mark.anyio
async def test_notify_announces_a_lone_commit_at_once_and_a_burst_a_few_times(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    """The first commit after a quiet spell is announced at once; a burst, once per delay."""
    async with (
        await open_store(
            postgres_url, registry, schema, auto_migrate=True, notify_delay=0.5
        ) as store,
        await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as listener,
    ):
        await listener.execute(f'LISTEN "{store.names.channel}"')
        heard: list[float] = []
        first = anyio.Event()

        async def listen() -> None:
            async for _ in listener.notifies():
                heard.append(anyio.current_time())
                first.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listen)
            await anyio.sleep(0.1)
            start = anyio.current_time()
            await store.append("lone", [MoneyDeposited(amount=1)])
            with anyio.fail_after(5):
                await first.wait()
            assert heard[0] - start < 0.4, "a lone commit waited for notify_delay"
            await anyio.sleep(0.6)  # a quiet spell
            heard.clear()
            for n in range(40):
                await store.append(f"burst-{n}", [MoneyDeposited(amount=n)])
            await anyio.sleep(1.2)
            tasks.cancel_scope.cancel()
    # At once, then one per 0.5 s at most while the burst lasted.
    assert 1 <= len(heard) <= 2 + int((heard[-1] - heard[0]) / 0.5), heard
    assert len(heard) < 10


@pytest.mark.anyio
async def test_events_and_read_model_rows_commit_together_on_a_callers_connection(
    store: PostgresEventStore, postgres_url: str, schema: str
) -> None:
    table = f'"{schema}".balances'
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        await conn.execute(f"CREATE TABLE {table} (account text PRIMARY KEY, balance int)")
        await conn.commit()
        for outcome in ("rollback", "commit"):
            bound = store.using(conn)
            await bound.append("account-1", [MoneyDeposited(amount=5)])
            await conn.execute(f"INSERT INTO {table} VALUES ('account-1', 5)")
            await (conn.rollback() if outcome == "rollback" else conn.commit())
            count = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
            await conn.commit()
            assert count is not None
            assert count[0] == (0 if outcome == "rollback" else 1)
    assert [e.data for e in await store.read_stream("account-1")] == [MoneyDeposited(amount=5)]


@pytest.mark.anyio
async def test_closing_a_bound_store_leaves_the_parent_working(store: PostgresEventStore) -> None:
    async with store.transaction() as tx:
        await tx.append("s", [MoneyDeposited(amount=1)])
        await tx.close()
    async with store.subscribe() as subscription:
        with anyio.fail_after(5):
            async for event in subscription:
                assert event.stream_id == "s"
                break


@pytest.mark.anyio
async def test_the_task_holding_a_transaction_cannot_deadlock_itself(
    store: PostgresEventStore,
) -> None:
    async with store.transaction() as tx:
        await tx.append("x", [MoneyDeposited(amount=1)])
        with pytest.raises(StoreConfigurationError, match="append through the"):
            await store.append("x", [MoneyDeposited(amount=2)])
        with pytest.raises(StoreConfigurationError, match="do not nest"):
            async with tx.transaction():
                pass
    assert len(await store.read_stream("x")) == 1


@pytest.mark.anyio
async def test_a_failed_step_leaves_a_transaction_that_can_only_roll_back(
    store: PostgresEventStore,
) -> None:
    await store.append("s", [MoneyDeposited(amount=1)])
    with pytest.raises(StoreConfigurationError, match="roll"):
        async with store.transaction() as tx:
            with pytest.raises(WrongExpectedVersion):
                await tx.append("s", [MoneyDeposited(amount=2)], expected_version=0)
            await tx.append("t", [MoneyDeposited(amount=3)])
    assert await store.read_stream("t") == []


@pytest.mark.anyio
async def test_a_closed_store_says_so(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    store = await open_store(postgres_url, registry, schema, auto_migrate=True)
    await store.close()
    with pytest.raises(StoreConfigurationError, match="closed"):
        await store.append("s", [MoneyDeposited(amount=1)])


@pytest.mark.anyio
async def test_server_options_in_the_url_are_kept(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    url = f"{postgres_url}?options=-c%20application_name%3Duno-options-test"
    async with await open_store(url, registry, schema, auto_migrate=True) as store:
        await store.append("s", [MoneyDeposited(amount=1)])
        (event,) = await store.read_stream("s")
        assert event.recorded_at.utcoffset() is not None
        async with store._pool.connection() as conn:
            row = await (
                await conn.execute("SELECT current_setting('application_name')")
            ).fetchone()
            zone = await (await conn.execute("SELECT current_setting('TimeZone')")).fetchone()
        assert row == ("uno-options-test",)
        assert zone == ("UTC",)


# -- lag: log_position and count_events ----------------------------------------------


# -- leases -------------------------------------------------------------------------


async def terminate(postgres_url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.anyio
async def test_two_stores_cannot_both_hold_a_lease_until_it_is_released(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    async with (
        await open_store(postgres_url, registry, schema, auto_migrate=True) as one,
        await open_store(postgres_url, registry, schema) as two,
    ):
        leases_one: LeaseStore = one.lease_store()  # checked by mypy too
        leases_two = two.lease_store()
        transactional: TransactionalEventStore = one
        assert isinstance(leases_one, LeaseStore)
        assert isinstance(transactional, TransactionalEventStore)
        lease = await leases_one.try_acquire("projection-1")
        assert isinstance(lease, PostgresLease)
        assert isinstance(lease, Lease)
        assert lease.name == "projection-1"
        assert await leases_two.try_acquire("projection-1") is None
        assert await leases_one.try_acquire("projection-1") is None  # one holder, even in-process
        other = await leases_two.try_acquire("projection-2")
        assert other is not None
        assert await lease.check()
        await lease.release()
        await lease.release()
        assert not await lease.check()
        successor = await leases_two.try_acquire("projection-1")
        assert successor is not None
        assert await successor.check()
        await successor.release()
        await other.release()


@pytest.mark.anyio
async def test_a_lease_whose_connection_is_killed_is_lost_and_free_again(
    store: PostgresEventStore, postgres_url: str
) -> None:
    leases = store.lease_store()
    lease = await leases.try_acquire("projection-1")
    assert isinstance(lease, PostgresLease)
    await terminate(postgres_url, lease.backend_pid)
    with anyio.fail_after(10):
        assert not await lease.check()
    assert not await lease.check()  # lost for good
    successor = await leases.try_acquire("projection-1")
    assert successor is not None
    assert await successor.check()
    await lease.release()  # harmless after the loss
    assert await successor.check()
    await successor.release()


@pytest.mark.anyio
async def test_a_lease_unlocked_behind_its_back_is_lost(
    store: PostgresEventStore, postgres_url: str
) -> None:
    """check() asks the server: a lock gone from pg_locks means the lease is gone."""
    lease = await store.lease_store().try_acquire("p")
    assert isinstance(lease, PostgresLease)
    connection = lease._connection
    assert connection is not None
    await connection.execute("SELECT pg_advisory_unlock_all()")
    assert not await lease.check()
    assert lease._connection is None  # its session is closed
    successor = await store.lease_store().try_acquire("p")
    assert successor is not None
    await successor.release()


@pytest.mark.anyio
async def test_leases_of_stores_in_other_schemas_do_not_collide(
    registry: EventRegistry, schema: str, postgres_url: str
) -> None:
    async with (
        await open_store(postgres_url, registry, schema, auto_migrate=True) as one,
        await open_store(
            postgres_url, registry, schema, auto_migrate=True, table_prefix="other_"
        ) as prefixed,
    ):
        other_schema = f"{schema}_b"
        try:
            async with await open_store(
                postgres_url, registry, other_schema, auto_migrate=True
            ) as two:
                held = await one.lease_store().try_acquire("projection-1")
                assert held is not None
                elsewhere = await two.lease_store().try_acquire("projection-1")
                assert elsewhere is not None
                beside = await prefixed.lease_store().try_acquire("projection-1")
                assert beside is not None
                for lease in (held, elsewhere, beside):
                    assert await lease.check()
                    await lease.release()
        finally:
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{other_schema}" CASCADE')


def test_lease_keys_are_stable_and_depend_on_the_namespace() -> None:
    key = advisory_lock_key("uno.event_storage:public.uno_", "projection-1")
    assert key == advisory_lock_key("uno.event_storage:public.uno_", "projection-1")
    assert key != advisory_lock_key("uno.event_storage:other.uno_", "projection-1")
    assert key != advisory_lock_key("uno.event_storage:public.uno_", "projection-2")
    assert all(-(2**31) <= part < 2**31 for part in key)


_LEASE_HOLDER = """
import sys, anyio
from uno.event_storage.postgres import PostgresEventStore
from uno.event_storage.testing import contract_registry

async def main():
    store = await PostgresEventStore.from_url(sys.argv[1], registry=contract_registry(),
                                              schema=sys.argv[2])
    lease = await store.lease_store().try_acquire("projection-1")
    print("held" if lease is not None else "refused", flush=True)
    await anyio.sleep(120)

anyio.run(main)
"""


@pytest.mark.anyio
async def test_a_killed_holder_process_frees_its_lease(
    store: PostgresEventStore, schema: str, postgres_url: str
) -> None:
    leases = store.lease_store()
    async with await anyio.open_process(
        [sys.executable, "-c", _LEASE_HOLDER, postgres_url, schema],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    ) as child:
        try:
            assert child.stdout is not None
            with anyio.fail_after(30):
                line = await child.stdout.receive()
            assert line.decode().strip() == "held"
            assert await leases.try_acquire("projection-1") is None
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
    with anyio.fail_after(10):  # the server ends the session as the socket closes
        while True:
            lease = await leases.try_acquire("projection-1")
            if lease is not None:
                break
            await anyio.sleep(0.05)
    assert await lease.check()
    await lease.release()
