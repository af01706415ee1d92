"""The SQLite backend passes the conformance kit, and keeps its own promises."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import RFC_4122, UUID

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.event_storage import open_event_store
from uno.event_storage._subscription import Notifier
from uno.event_storage.exceptions import (
    DuplicateEventId,
    SchemaError,
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
)
from uno.event_storage.sqlite import INLINE_ROWS, SQLiteEventStore, _writer
from uno.event_storage.sqlite._ids import assigned_id, assigned_position, id_base, salt_from_bytes
from uno.event_storage.sqlite._sql import COPIED_BLOB, MIGRATIONS
from uno.event_storage.sqlite._writer import _CHECKPOINT_PAGES
from uno.event_storage.testing import (
    AccountOpened,
    EventStoreContract,
    MoneyDeposited,
    TransactionalStoreContract,
    contract_registry,
    run_concurrent_writers,
)
from uno.events import (
    NO_STREAM,
    Direction,
    Event,
    EventMetadata,
    EventRegistry,
    LeaseStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamAppend,
    TransactionalEventStore,
    uuid7,
)
from uno.events.exceptions import EventDecodeError

pytestmark = pytest.mark.anyio


class TestSQLiteEventStore(EventStoreContract, TransactionalStoreContract):
    @pytest.fixture
    async def store(
        self, registry: EventRegistry, tmp_path: Path
    ) -> AsyncIterator[SQLiteEventStore]:
        url = f"sqlite:///{tmp_path}/events.db"
        async with open_event_store(url, registry=registry, max_event_size=4096) as store:
            assert isinstance(store, SQLiteEventStore)
            yield store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> EventRegistry:
    return contract_registry()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


async def open_store(db: Path, registry: EventRegistry, **options: Any) -> SQLiteEventStore:
    store = await SQLiteEventStore.from_url(f"sqlite:///{db}", registry=registry, **options)
    assert isinstance(store, SQLiteEventStore)
    return store


def query(db: Path, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
    """Run SQL on the file with plain sqlite3, as another program would."""
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        return connection.execute(sql, parameters).fetchall()


def deposits(count: int, start: int = 0) -> list[NewEvent]:
    return [NewEvent(data=MoneyDeposited(amount=n)) for n in range(start, start + count)]


# -- opening and migrating ------------------------------------------------------------


async def test_migrations_are_recorded_once(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry) as store:
        await store.migrate()
        await store.migrate()
    versions = query(db, "SELECT version FROM uno_schema_migrations")
    assert versions == [(1,), (2,), (3,)]
    tables = {name for (name,) in query(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"uno_events", "uno_streams", "uno_snapshots", "uno_checkpoints", "uno_leases"} <= tables
    assert query(db, "PRAGMA journal_mode") == [("wal",)]


async def test_two_stores_migrating_one_file_at_once_both_succeed(
    db: Path, registry: EventRegistry
) -> None:
    stores = [await open_store(db, registry, auto_migrate=False) for _ in range(4)]
    try:
        async with anyio.create_task_group() as tasks:
            for store in stores:
                tasks.start_soon(store.migrate)
        await stores[0].append("s", deposits(1))
        assert len(await stores[3].read_stream("s")) == 1
    finally:
        for store in stores:
            await store.close()
    assert query(db, "SELECT version FROM uno_schema_migrations") == [(1,), (2,), (3,)]


async def test_an_unmigrated_file_raises_schema_not_migrated_until_migrated(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry, auto_migrate=False) as store:
        with pytest.raises(SchemaNotMigrated) as info:
            await store.append("s", deposits(1))
        assert (info.value.have, info.value.want, info.value.where) == (0, 3, str(db))
        with pytest.raises(SchemaNotMigrated):
            await store.read_stream("s")
        with pytest.raises(SchemaNotMigrated):
            async with store.transaction():
                pass
        await store.migrate()
        await store.append("s", deposits(1))
        assert len(await store.read_stream("s")) == 1


async def test_a_store_sees_a_migration_made_by_another(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry, auto_migrate=False) as waiting:
        with pytest.raises(SchemaNotMigrated):
            await waiting.stream_version("s")
        async with await open_store(db, registry) as migrating:
            await migrating.append("s", deposits(2))
        assert await waiting.stream_version("s") == 2


async def test_a_schema_newer_than_this_code_is_refused(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry):
        pass
    query(db, "INSERT INTO uno_schema_migrations VALUES (99, 'the future')")
    with pytest.raises(SchemaError, match="newer"):
        await open_store(db, registry)
    with pytest.raises(SchemaError, match="newer"):
        await open_store(db, registry, auto_migrate=False)


async def test_a_version_1_file_is_upgraded_keeping_its_events_and_their_ids(
    db: Path, registry: EventRegistry
) -> None:
    # Version 1 indexed every id; version 2 rebuilds the table so that only
    # ids callers chose are indexed. Every id stored before counts as chosen.
    old_ids = [uuid7() for _ in range(3)]
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "CREATE TABLE uno_schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)"
        )
        for statement in MIGRATIONS[0].statements:
            connection.execute(statement.format(p="uno_"))
        connection.execute("INSERT INTO uno_schema_migrations VALUES (1, 'an older release')")
        for n, event_id in enumerate(old_ids, start=1):
            connection.execute(
                "INSERT INTO uno_events VALUES (?, 'old', ?, ?, ?, 1, ?, x'', ?)",
                (n, n, event_id.bytes, "uno_contract.MoneyDeposited", b'{"amount":%d}' % n, n),
            )
        connection.execute("COMMIT")
    async with await open_store(db, registry) as store:
        events = await store.read_stream("old")
        assert [(e.event_id, e.data) for e in events] == [
            (i, MoneyDeposited(amount=n)) for n, i in enumerate(old_ids, start=1)
        ]
        again = await store.append("old", [NewEvent(data=events[1].data, event_id=old_ids[1])])
        assert (again.stream_version, again.global_position) == (2, 2)
        with pytest.raises(DuplicateEventId):
            await store.append("new", [NewEvent(data=events[0].data, event_id=old_ids[0])])
        later = await store.append("old", [MoneyDeposited(amount=4)], expected_version=3)
        assert (later.stream_version, later.global_position) == (4, 4)
    assert query(db, "SELECT version FROM uno_schema_migrations") == [(1,), (2,), (3,)]
    assert query(db, "SELECT id_assigned FROM uno_events ORDER BY position") == [
        (0,),
        (0,),
        (0,),
        (1,),
    ]


async def test_ids_the_store_assigns_carry_their_position_and_skip_the_index(
    tmp_path: Path, registry: EventRegistry
) -> None:
    ids = {}
    for name in ("one", "two"):
        db = tmp_path / f"{name}.db"
        async with await open_store(db, registry) as store:
            await store.append("s", [MoneyDeposited(amount=1), MoneyDeposited(amount=2)])
            await store.append("s", [NewEvent(data=MoneyDeposited(amount=3))])
            events = await store.read_stream("s")
        ids[name] = [e.event_id for e in events]
        assert query(db, "SELECT id_assigned FROM uno_events ORDER BY position") == [
            (1,),
            (1,),
            (0,),
        ]
        # Only the chosen id is in the unique index.
        indexed = query(
            db,
            "SELECT count(*) FROM uno_events INDEXED BY uno_events_chosen_id WHERE id_assigned = 0",
        )
        assert indexed == [(1,)]
        for event in events[:2]:
            assert event.event_id.version == 7
            # The id's time is the millisecond the event was recorded.
            since_epoch = event.recorded_at - datetime(1970, 1, 1, tzinfo=UTC)
            assert event.event_id.int >> 80 == since_epoch // timedelta(milliseconds=1)
    # Two databases number their events alike, but their salts make the ids differ.
    assert not set(ids["one"]) & set(ids["two"])


async def test_ids_data_and_metadata_are_stored_as_blobs_of_their_bytes(
    db: Path, registry: EventRegistry
) -> None:
    # Small blobs are bound as bytearray copies (cheaper for sqlite3 than bytes),
    # large ones as they are: both must store the same BLOB, empty metadata included.
    chosen = uuid7()
    large = "x" * (COPIED_BLOB + 1)
    tagged = EventMetadata(tenant_id="t-1", headers={"k": "v"})
    async with await open_store(db, registry) as store:
        await store.append("s", [MoneyDeposited(amount=1)])
        await store.append(
            "s", [NewEvent(data=AccountOpened(owner=large), event_id=chosen, metadata=tagged)]
        )
        events = await store.read_stream("s")
    rows = query(
        db,
        "SELECT typeof(event_id), typeof(data), typeof(metadata), length(metadata), event_id "
        "FROM uno_events ORDER BY position",
    )
    assert [row[:3] for row in rows] == [("blob", "blob", "blob")] * 2
    assert rows[0][3] == 0
    assert rows[1][3] > 0
    assert [row[4] for row in rows] == [e.event_id.bytes for e in events]
    assert events[1].event_id == chosen
    assert events[1].data == AccountOpened(owner=large)
    assert events[1].metadata == tagged
    assert events[0].data == MoneyDeposited(amount=1)


async def test_a_chosen_id_that_decodes_to_a_stored_position_is_no_duplicate(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", [MoneyDeposited(amount=1)])
        (stored,) = await store.read_stream("s")
        # Same position bits, another millisecond: it decodes to position 1,
        # whose row holds a different id, so it is a new event.
        lookalike = UUID(int=stored.event_id.int ^ (1 << 100))
        result = await store.append(
            "t", [NewEvent(data=MoneyDeposited(amount=2), event_id=lookalike)]
        )
        assert (result.stream_version, result.global_position) == (1, 2)
        retry = await store.append(
            "t", [NewEvent(data=MoneyDeposited(amount=2), event_id=lookalike)]
        )
        assert retry == result
        assert [e.event_id for e in await store.read_stream("t")] == [lookalike]
        async with store.transaction() as tx:
            again = await tx.append("s", [NewEvent(data=stored.data, event_id=stored.event_id)])
        assert (again.stream_version, again.global_position) == (1, 1)
    assert query(db, "SELECT count(*) FROM uno_events") == [(2,)]


@given(
    position=st.integers(1, 2**63 - 1),
    recorded_at=st.integers(0, 2**47 * 1000),
    salt=st.binary(min_size=10, max_size=10),
    other=st.integers(1, 2**63 - 1),
)
def test_an_assigned_id_decodes_to_its_position_and_no_other(
    position: int, recorded_at: int, salt: bytes, other: int
) -> None:
    key = salt_from_bytes(salt)
    event_id = UUID(bytes=assigned_id(position, id_base(recorded_at), key))
    assert (event_id.version, event_id.variant) == (7, RFC_4122)
    assert event_id.int >> 80 == recorded_at // 1000
    assert assigned_position(event_id, key) == position
    if other != position:
        assert assigned_id(other, id_base(recorded_at), key) != event_id.bytes


async def test_table_prefix_names_the_tables(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry, table_prefix="app_") as store:
        await store.append("s", deposits(1))
    assert query(db, "SELECT count(*) FROM app_events") == [(1,)]
    with pytest.raises(StoreConfigurationError, match="table_prefix"):
        await open_store(db, registry, table_prefix="x; DROP TABLE app_events; --")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/events.db",
        "sqlite:///events.db?mode=ro",
        "sqlite:///file:events.db",
    ],
)
async def test_urls_without_a_plain_file_are_refused(url: str, registry: EventRegistry) -> None:
    with pytest.raises(StoreConfigurationError, match=r"sqlite:///"):
        await SQLiteEventStore.from_url(url, registry=registry)


async def test_a_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, registry: EventRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    async with open_event_store("sqlite:///data/my%20events.db", registry=registry) as store:
        await store.append("s", deposits(1))
    assert query(tmp_path / "data" / "my events.db", "SELECT count(*) FROM uno_events") == [(1,)]


@pytest.mark.parametrize(
    "options",
    [
        {"synchronous": "OFF"},
        {"busy_timeout": -1},
        {"readers": 0},
        {"scan_window": 0},
        {"inline_events": -1},
    ],
)
async def test_bad_options_are_refused(
    db: Path, registry: EventRegistry, options: dict[str, Any]
) -> None:
    with pytest.raises(StoreConfigurationError):
        await open_store(db, registry, **options)


async def test_data_survives_closing_and_reopening(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry) as store:
        first = await store.append("s", deposits(3), expected_version=NO_STREAM)
        await store.save_checkpoint("projector", first.global_position)
        await store.set_stream_metadata("s", {"owner": "ops"})
    async with await open_store(db, registry, synchronous="FULL") as store:
        assert [e.data for e in await store.read_stream("s")] == [e.data for e in deposits(3)]
        assert await store.load_checkpoint("projector") == first.global_position
        assert await store.get_stream_metadata("s") == {"owner": "ops"}
        result = await store.append("s", deposits(1), expected_version=3)
        assert result.global_position == first.global_position + 1


# -- faults -------------------------------------------------------------------------


async def test_a_corrupt_row_raises_event_decode_error_naming_its_position(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(3))
        (broken,) = query(db, "SELECT position FROM uno_events WHERE stream_version = 2")
        query(db, "UPDATE uno_events SET data = x'ff00' WHERE position = ?", broken[0])
        with pytest.raises(EventDecodeError) as info:
            await store.read_stream("s")
        assert info.value.position == broken[0]
        with pytest.raises(EventDecodeError, match=f"global position {broken[0]}"):
            _ = [e async for e in store.read_all()]


async def test_a_write_lock_held_past_busy_timeout_raises_store_unavailable(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry, busy_timeout=0.05) as store:
        await store.append("s", deposits(1))
        with closing(sqlite3.connect(db, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="busy_timeout") as info:
                await store.append("s", deposits(1))
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert len(await store.read_stream("s")) == 1  # readers are not blocked
            other.execute("ROLLBACK")
        await store.append("s", deposits(1))
        assert await store.stream_version("s") == 2


async def test_a_missing_directory_raises_store_unavailable_on_open(
    tmp_path: Path, registry: EventRegistry
) -> None:
    with pytest.raises(StoreUnavailable, match="unable to open"):
        await open_store(tmp_path / "missing" / "events.db", registry)


async def test_a_closed_store_refuses_work(db: Path, registry: EventRegistry) -> None:
    store = await open_store(db, registry)
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.append("s", deposits(1))


# -- transactions -------------------------------------------------------------------


async def test_run_writes_a_read_model_in_the_events_transaction(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        async with store.transaction() as tx:
            await tx.run(lambda c: c.execute("CREATE TABLE balances (id TEXT PRIMARY KEY, n INT)"))
        async with store.transaction() as tx:
            await tx.append("kept", deposits(1))
            await tx.run(lambda c: c.execute("INSERT INTO balances VALUES ('kept', 1)"))
            assert await tx.run(lambda c: c) is tx.connection
        with pytest.raises(RuntimeError):
            await write_then_fail(store)
    assert query(db, "SELECT id FROM balances") == [("kept",)]
    assert query(db, "SELECT DISTINCT stream_id FROM uno_events") == [("kept",)]


async def write_then_fail(store: SQLiteEventStore) -> None:
    async with store.transaction() as tx:
        await tx.append("dropped", deposits(1))
        await tx.run(lambda c: c.execute("INSERT INTO balances VALUES ('dropped', 1)"))
        raise RuntimeError


async def test_a_failed_step_leaves_the_transaction_as_it_was(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        async with store.transaction() as tx:
            await tx.append("s", deposits(2))
            with pytest.raises(WrongExpectedVersion):
                await tx.append_streams(
                    [
                        StreamAppend(stream_id="t", events=deposits(1)),
                        StreamAppend(stream_id="s", events=deposits(1), expected_version=5),
                    ]
                )
            with pytest.raises(sqlite3.OperationalError):
                await tx.run(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"))
            await tx.append("s", deposits(1), expected_version=2)
            assert [e.stream_version for e in await tx.read_stream("s")] == [1, 2, 3]
            assert await store.stream_version("s") is None  # the store reads what is committed
        assert await store.stream_version("s") == 3
        assert await store.stream_version("t") is None


async def test_the_store_refuses_writes_from_inside_its_transaction(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        async with store.transaction() as tx:
            with pytest.raises(StoreConfigurationError, match=r"tx\.append"):
                await store.append("s", deposits(1))
            with pytest.raises(StoreConfigurationError):
                async with store.transaction():
                    pass
            with pytest.raises(StoreConfigurationError, match="subscribe"):
                tx.subscribe()
            await tx.append("s", deposits(1))
        with pytest.raises(StoreConfigurationError, match="ended"):
            await tx.append("s", deposits(1))
        assert await store.stream_version("s") == 1


async def test_writes_of_other_tasks_wait_for_the_transaction(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        async with anyio.create_task_group() as tasks, store.transaction() as tx:
            await tx.append("s", deposits(1))
            tasks.start_soon(store.append, "s", deposits(1, 10))
            await anyio.sleep(0.05)
            assert await tx.stream_version("s") == 1
        amounts = [e.data.amount for e in await store.read_stream("s")]  # type: ignore[attr-defined]
        assert amounts == [0, 10]


async def close_inside_a_transaction(
    store: SQLiteEventStore, opened: anyio.Event
) -> StoreUnavailable | None:
    try:
        async with store.transaction() as tx:
            await tx.append("s", deposits(1))
            opened.set()
            await anyio.sleep(0.05)
            await store.close()
    except StoreUnavailable as error:
        return error
    return None


async def test_closing_the_store_rolls_back_its_open_transaction(
    db: Path, registry: EventRegistry
) -> None:
    store = await open_store(db, registry)
    opened = anyio.Event()
    refused: list[StoreUnavailable] = []

    async def append_meanwhile() -> None:
        await opened.wait()
        try:
            await store.append("t", deposits(1))  # waits behind the transaction
        except StoreUnavailable as error:
            refused.append(error)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(append_meanwhile)
            commit_error = await close_inside_a_transaction(store, opened)
    assert commit_error is not None
    assert len(refused) == 1
    assert "closed" in str(refused[0])
    assert query(db, "SELECT count(*) FROM uno_events") == [(0,)]


# -- the log ------------------------------------------------------------------------


async def test_positions_are_never_reused_after_erasing_the_newest_events(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("a", deposits(1))
        erased = await store.append("b", deposits(2))
        await store.delete_stream("b", hard=True)
    async with await open_store(db, registry) as store:
        later = await store.append("c", deposits(1))
        assert later.global_position > erased.global_position
        assert query(db, "SELECT count(*) FROM uno_events WHERE stream_id = 'b'") == [(0,)]


async def test_filtered_reads_walk_a_long_log_in_windows(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry, scan_window=3) as store:
        await store.append("account-1", [AccountOpened(owner="a")])
        for n in range(10):
            await store.append(f"ledger-{n}", deposits(1))
        await store.append("account-2", [AccountOpened(owner="b")])
        opened = store.read_all(event_types=["uno_contract.AccountOpened"], batch_size=1)
        assert [e.stream_id async for e in opened] == ["account-1", "account-2"]
        ledgers = [e async for e in store.read_all(stream_prefix="ledger-", batch_size=4)]
        assert [e.stream_id for e in ledgers] == [f"ledger-{n}" for n in range(10)]


async def test_retrying_a_large_append_stores_it_once(db: Path, registry: EventRegistry) -> None:
    batch = deposits(1200)
    async with await open_store(db, registry) as store:
        first = await store.append("big", batch, expected_version=NO_STREAM)
        assert await store.append("big", batch, expected_version=NO_STREAM) == first
        with pytest.raises(DuplicateEventId):
            await store.append("big", [*batch, *deposits(1)])
        assert await store.stream_version("big") == 1200


# -- other processes ----------------------------------------------------------------

_REMOTE_WRITER = """
import sys

import anyio

from uno.event_storage import open_event_store
from uno.event_storage.testing import MoneyDeposited, contract_registry


async def main() -> None:
    async with open_event_store(sys.argv[1], registry=contract_registry()) as store:
        for n in range(5):
            await store.append("remote", [MoneyDeposited(amount=n)])
            await anyio.sleep(0.01)


anyio.run(main)
"""


async def test_a_subscription_sees_what_another_process_appends(
    db: Path, registry: EventRegistry
) -> None:
    seen: list[RecordedEvent[Event]] = []
    async with await open_store(db, registry, poll_interval=0.05) as store:

        async def remote() -> None:
            done = await anyio.run_process(
                [sys.executable, "-c", _REMOTE_WRITER, f"sqlite:///{db}"],
                check=False,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
            assert done.returncode == 0, done.stderr.decode()

        with anyio.fail_after(60):
            async with store.subscribe() as subscription, anyio.create_task_group() as tasks:
                tasks.start_soon(remote)
                async for event in subscription:
                    seen.append(event)
                    if len(seen) == 5:
                        break
    assert [e.data for e in seen] == [MoneyDeposited(amount=n) for n in range(5)]
    assert {e.stream_id for e in seen} == {"remote"}


# -- concurrency --------------------------------------------------------------------


async def test_cancelled_appends_are_stored_whole_or_not_at_all(
    db: Path, registry: EventRegistry
) -> None:
    async def cancel_after(checkpoints: int, scope: anyio.CancelScope) -> None:
        for _ in range(checkpoints):
            await anyio.lowlevel.checkpoint()
        scope.cancel()

    async with await open_store(db, registry) as store:
        for n in range(300):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(cancel_after, n % 5, scope)
                    if n % 3 == 0:
                        async with store.transaction() as tx:
                            await tx.append(f"s-{n}", deposits(4))
                    else:
                        await store.append(f"s-{n}", deposits(4))
        after = await store.append("after", deposits(1))  # queued behind every earlier write
        counts = {len(await store.read_stream(f"s-{n}")) for n in range(300)}
        assert counts <= {0, 4}
        logged = [e async for e in store.read_all()]
        assert len(logged) % 4 == 1
        assert logged[-1].global_position == after.global_position


@pytest.mark.slow
async def test_sixteen_writers_with_rollbacks_and_subscribers_agree_on_the_log(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        report = await run_concurrent_writers(
            store, writers=16, subscribers=4, appends_per_writer=150, seed=7
        )
    assert report.rolled_back
    assert report.conflicts
    report.check()


# -- the inline fast path -----------------------------------------------------------


def wal_size(db: Path) -> int:
    """Return the size of the database's WAL file, in bytes."""
    return Path(f"{db}-wal").stat().st_size


def handed_off(store: SQLiteEventStore) -> int:
    """Count the work sent to the writer thread so far: an inline append sends none."""
    return store._writer.sent


async def test_small_appends_run_inline_and_large_ones_on_the_writer_thread(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry, inline_events=3) as store:
        await store.append("s", deposits(1))  # the writer thread primes the WAL after it
        await anyio.sleep(0.05)
        before = handed_off(store)
        for n in range(20):
            await store.append("s", deposits(1, n), expected_version=n + 1)
        await store.append_streams(
            [
                StreamAppend(stream_id="s", events=deposits(2)),
                StreamAppend(stream_id="t", events=deposits(1)),
            ]
        )
        assert handed_off(store) == before
        await store.append("s", deposits(4))  # more events than inline_events
        assert handed_off(store) == before + 1
        await store.append("s", [MoneyDeposited(amount=n, note="x" * 200_000) for n in range(2)])
        assert handed_off(store) == before + 2  # more than 256 KiB
        assert await store.stream_version("s") == 29


@pytest.mark.parametrize("options", [{"synchronous": "FULL"}, {"inline_events": 0}])
async def test_without_the_inline_path_every_write_goes_to_the_writer_thread(
    db: Path, registry: EventRegistry, options: dict[str, Any]
) -> None:
    async with await open_store(db, registry, **options) as store:
        before = handed_off(store)
        for n in range(5):
            await store.append("s", deposits(1, n))
        assert handed_off(store) == before + 5
        autocheckpoint = await store._writer.run(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert autocheckpoint == 1000  # SQLite checkpoints by itself, on the writer thread


async def test_appends_wait_in_order_behind_an_open_transaction(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("warm", deposits(1))
        await anyio.sleep(0.05)
        async with anyio.create_task_group() as tasks:
            async with store.transaction() as tx:
                await tx.append("tx", deposits(1))
                before = handed_off(store)
                for n in range(50):
                    tasks.start_soon(store.append, "s", deposits(1, n))
                await anyio.sleep(0.05)
                assert handed_off(store) == before + 50  # none ran inline
                assert query(db, "SELECT count(*) FROM uno_events WHERE stream_id = 's'") == [(0,)]
            await store.append("s", deposits(1, 50))  # queued behind them, not run inline first
        events = await store.read_stream("s")
        assert [e.data for e in events] == [MoneyDeposited(amount=n) for n in range(51)]
        (committed,) = await store.read_stream("tx")
        assert committed.global_position < events[0].global_position


_LOCK_HOLDER = """
import sqlite3
import sys
import time

connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


async def test_an_append_waits_for_another_process_lock_on_the_writer_thread(
    db: Path, registry: EventRegistry
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    async with await open_store(db, registry, busy_timeout=30) as store:
        await store.append("s", deposits(1))
        await anyio.sleep(0.05)
        command = [sys.executable, "-c", _LOCK_HOLDER, str(db), "0.5"]
        with anyio.fail_after(30):
            async with await anyio.open_process(command) as holder:
                assert holder.stdout is not None
                said = b""
                while b"locked" not in said:
                    said += await holder.stdout.receive()
                before = handed_off(store)
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(tick)
                    started = time.monotonic()
                    result = await store.append("s", deposits(1), expected_version=1)
                    waited = time.monotonic() - started
                    tasks.cancel_scope.cancel()
                assert await holder.wait() == 0
        assert waited > 0.2  # until the other process let go of the lock...
        assert ticks > waited / 0.005 / 4  # ...while the event loop went on running
        assert handed_off(store) == before + 1  # the inline attempt handed it over
        assert result.stream_version == 2
        await store.append("s", deposits(1), expected_version=2)
        assert await store.stream_version("s") == 3


async def test_a_loop_of_inline_appends_lets_other_tasks_run(
    db: Path, registry: EventRegistry
) -> None:
    turns = 0

    async def take_turns() -> None:
        nonlocal turns
        while True:
            await anyio.lowlevel.checkpoint()
            turns += 1

    async with await open_store(db, registry) as store:
        await store.append("s", deposits(1))
        await anyio.sleep(0.05)
        before = handed_off(store)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(take_turns)
            await anyio.lowlevel.checkpoint()
            turns = 0
            started = time.monotonic()
            for n in range(250):  # too few pages for a checkpoint: every one runs inline
                await store.append("s", deposits(1, n))
            elapsed = time.monotonic() - started
            tasks.cancel_scope.cancel()
        assert handed_off(store) == before
    assert turns >= elapsed / 0.001 / 3  # about one a millisecond


async def test_a_commit_by_another_connection_sends_the_next_append_to_the_writer_thread(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(1))
        await anyio.sleep(0.05)
        before = handed_off(store)
        await store.append("s", deposits(1))
        assert handed_off(store) == before
        query(db, "INSERT INTO uno_checkpoints VALUES ('elsewhere', 1)")  # it may checkpoint
        await store.append("s", deposits(1))
        assert handed_off(store) == before + 1
        await anyio.sleep(0.05)  # the writer thread primes the WAL again
        await store.append("s", deposits(1))
        assert handed_off(store) == before + 1
        assert await store.stream_version("s") == 4


async def test_inline_appends_keep_the_wal_checkpointed(db: Path, registry: EventRegistry) -> None:
    largest = 0
    appends = 2 * _CHECKPOINT_PAGES  # each writes 3 pages or more: 6 checkpoints' worth
    async with await open_store(db, registry) as store:
        before = handed_off(store)
        for n in range(appends):
            await store.append(f"s-{n % 10}", deposits(1, n))
            largest = max(largest, wal_size(db))
        assert handed_off(store) - before < appends // 10  # most ran inline
        autocheckpoint = await store._writer.run(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
    # Unchecked, the WAL would hold more than 6 * _CHECKPOINT_PAGES frames of 4 KiB. Checked,
    # it grows past _CHECKPOINT_PAGES by what the loop appends while a checkpoint runs.
    frame = 4096 + 24
    assert largest < 2.5 * _CHECKPOINT_PAGES * frame
    assert autocheckpoint == 0
    assert query(db, "SELECT count(*) FROM uno_events") == [(appends,)]


class OwnedLock:
    """A ``threading.Lock`` that knows which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if taken := self._lock.acquire(blocking, timeout):
            self.owner = threading.get_ident()
        return taken

    def release(self) -> None:
        self.owner = None
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class RecordedLock(OwnedLock):
    """An ``OwnedLock`` that notes which thread took it, and when."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[tuple[str, float]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if taken := super().acquire(blocking, timeout):
            self.taken.append((threading.current_thread().name, time.monotonic()))
        return taken


def record_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Note when each of the checkpointer's checkpoints began and ended."""
    checkpoints: list[tuple[float, float]] = []
    checkpoint = _writer.Writer._checkpoint

    def recorded(self: _writer.Writer, *helpers: sqlite3.Connection) -> None:
        began = time.monotonic()
        try:
            checkpoint(self, *helpers)
        finally:
            checkpoints.append((began, time.monotonic()))

    monkeypatch.setattr(_writer.Writer, "_checkpoint", recorded)
    return checkpoints


async def test_while_the_loop_appends_a_checkpoint_takes_the_writers_lock_once(
    db: Path, registry: EventRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each time the checkpointer holds the lock, an inline append hands off to the
    # writer thread and waits for it. While the loop appends, its own commits keep
    # the WAL primed: only the last part of a checkpoint (starting the WAL over)
    # needs the lock.
    monkeypatch.setattr(_writer, "_CHECKPOINT_PAGES", 64)  # one in about 21 appends
    monkeypatch.setattr(_writer, "_PIN_WAIT", 10.0, raising=False)  # no priming by timeout
    checkpoints = record_checkpoints(monkeypatch)
    store = await open_store(db, registry)
    lock = store._writer.lock = RecordedLock()  # type: ignore[assignment]
    appended = 0
    async with store:
        while len(checkpoints) < 5 and appended < 20_000:  # a checkpoint takes milliseconds
            await store.append(f"s-{appended % 10}", deposits(1, appended))
            appended += 1
        stopped = time.monotonic()
    whole = [(began, ended) for began, ended in checkpoints if ended < stopped]
    assert len(whole) >= 5
    held = [at for thread, at in lock.taken if thread == "uno-sqlite-checkpointer"]
    for began, ended in whole:
        assert len([at for at in held if began <= at <= ended]) == 1
    assert query(db, "SELECT count(*) FROM uno_events") == [(appended,)]


async def test_when_the_loop_is_quiet_the_checkpointer_primes_the_wal_itself(
    db: Path, registry: EventRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "_CHECKPOINT_PAGES", 64)
    checkpoints = record_checkpoints(monkeypatch)
    async with await open_store(db, registry) as store:
        for n in range(30):  # about 90 pages, then nothing
            await store.append("s", deposits(1, n))
        for _ in range(200):
            if checkpoints:
                break
            await anyio.sleep(0.01)
        assert len(checkpoints) == 1
        before = handed_off(store)
        await store.append("s", deposits(1, 30))
        assert handed_off(store) == before  # primed: inline
        # The WAL was copied whole and started over: it holds the priming frame and
        # the last append's, not the 90 or so before.
        busy, frames, _ = query(db, "PRAGMA wal_checkpoint(PASSIVE)")[0]
        assert busy == 0
        assert 2 <= frames <= 6
    assert query(db, "SELECT count(*) FROM uno_events") == [(31,)]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads file names from /proc")
async def test_the_checkpointer_syncs_the_wal_and_the_database_before_its_locked_part(
    db: Path, registry: EventRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "_CHECKPOINT_PAGES", 64)  # one in about 21 appends
    sync = getattr(os, "fdatasync", os.fsync)
    syncs: list[tuple[str, str, bool]] = []  # file, thread, whether it held the writer's lock
    store = await open_store(db, registry)
    lock = store._writer.lock = OwnedLock()  # type: ignore[assignment]

    def recording_sync(fd: int) -> None:
        held = lock.owner == threading.get_ident()
        syncs.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread().name, held))
        sync(fd)

    monkeypatch.setattr(os, "fdatasync" if hasattr(os, "fdatasync") else "fsync", recording_sync)
    async with store:
        for n in range(100):
            await store.append("s", deposits(1, n))
        for _ in range(200):  # the checkpointer's thread is still at work, maybe
            if syncs:
                break
            await anyio.sleep(0.01)
        assert await store.stream_version("s") == 100
    assert syncs
    # tmp_path is a real path. (SQLite's own syncs, in C, are not seen here.)
    checkpointer = "uno-sqlite-checkpointer"
    assert set(syncs) == {(f"{db}-wal", checkpointer, False), (str(db), checkpointer, False)}
    assert query(db, "SELECT count(*) FROM uno_events") == [(100,)]


# -- small reads on the event loop -----------------------------------------------------


def read_by_thread(store: SQLiteEventStore) -> int:
    """Count the reads sent to the reader threads so far: an inline read sends none."""
    return store._readers.sent


async def test_small_reads_run_on_the_event_loop_without_the_reader_threads(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(10))
        await store.save_snapshot(
            Snapshot(stream_id="s", stream_version=10, state=MoneyDeposited(amount=45))
        )
        await store.save_checkpoint("c", 7)
        await store.set_stream_metadata("s", {"owner": "ann"})
        before = read_by_thread(store)
        assert [e.stream_version for e in await store.read_stream("s")] == list(range(1, 11))
        assert [e.data for e in await store.read_stream("s", limit=2)] == [
            MoneyDeposited(amount=0),
            MoneyDeposited(amount=1),
        ]
        assert await store.stream_version("s") == 10
        assert await store.log_position() == 10
        assert await store.load_checkpoint("c") == 7
        assert await store.get_stream_metadata("s") == {"owner": "ann"}
        snapshot = await store.load_snapshot("s")
        assert snapshot is not None
        assert snapshot.state == MoneyDeposited(amount=45)
        assert read_by_thread(store) == before
        assert len([e async for e in store.read_all()]) == 10  # a page: on a thread
        assert read_by_thread(store) > before


async def test_without_inline_reads_every_read_goes_to_a_reader_thread(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry, inline_reads=False) as store:
        await store.append("s", deposits(3))
        before = read_by_thread(store)
        assert len(await store.read_stream("s")) == 3
        assert await store.stream_version("s") == 3
        assert read_by_thread(store) == before + 2


async def test_a_deleted_stream_read_inline_raises(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(2))
        await store.delete_stream("s")
        with pytest.raises(StreamDeleted):
            await store.read_stream("s")


async def test_a_long_stream_is_read_whole_in_two_parts(db: Path, registry: EventRegistry) -> None:
    length = INLINE_ROWS * 2 + 5
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(length))
        before = read_by_thread(store)
        events = await store.read_stream("s")
        assert [e.data for e in events] == [MoneyDeposited(amount=n) for n in range(length)]
        assert read_by_thread(store) == before + 1  # the part after the first INLINE_ROWS
        backwards = await store.read_stream("s", direction=Direction.BACKWARDS)
        assert [e.stream_version for e in backwards] == list(range(length, 0, -1))


def test_read_stream_returns_the_slice_its_arguments_name(
    tmp_path: Path, registry: EventRegistry
) -> None:
    # Around INLINE_ROWS, where a read is split between the loop and a reader thread.
    length = INLINE_ROWS * 2 + 3
    with asyncio.Runner() as runner:
        store = runner.run(open_store(tmp_path / "long.db", registry))
        try:
            runner.run(store.append("long", deposits(length)))

            @settings(max_examples=80, deadline=None)
            @given(
                from_version=st.none() | st.integers(min_value=0, max_value=length + 3),
                backwards=st.booleans(),
                limit=st.none() | st.integers(min_value=0, max_value=length + 3),
            )
            def check(from_version: int | None, backwards: bool, limit: int | None) -> None:
                if backwards:
                    start = length if from_version is None else from_version
                    expected = list(range(min(start, length), 0, -1))
                else:
                    start = 1 if from_version is None else max(from_version, 1)
                    expected = list(range(start, length + 1))
                if limit is not None:
                    expected = expected[:limit]
                direction = Direction.BACKWARDS if backwards else Direction.FORWARDS
                events = runner.run(
                    store.read_stream(
                        "long", from_version=from_version, direction=direction, limit=limit
                    )
                )
                assert [e.stream_version for e in events] == expected

            check()
        finally:
            runner.run(store.close())


# -- lag and leases -----------------------------------------------------------------


async def test_a_transaction_counts_its_own_events(db: Path, registry: EventRegistry) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(1))
        async with store.transaction() as tx:
            result = await tx.append("s", deposits(2))
            assert await tx.log_position() == result.global_position
            assert await tx.count_events() == 3
            assert await store.count_events() == 1
        assert await store.log_position() == result.global_position


async def test_erasing_the_newest_events_lowers_the_log_position(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        kept = await store.append("kept", deposits(1))
        await store.append("erased", deposits(2))
        await store.delete_stream("erased", hard=True)
        assert await store.log_position() == kept.global_position
        assert await store.count_events(after=kept.global_position) == 0


async def test_stores_of_one_file_share_their_leases(
    tmp_path: Path, registry: EventRegistry
) -> None:
    async with (
        await open_store(tmp_path / "a.db", registry) as one,
        await open_store(tmp_path / "a.db", registry) as two,
        await open_store(tmp_path / "a.db", registry, table_prefix="other_") as prefixed,
        await open_store(tmp_path / "b.db", registry) as elsewhere,
    ):
        leases: LeaseStore = one.lease_store()  # checked by mypy too
        transactional: TransactionalEventStore = one
        assert isinstance(leases, LeaseStore)
        assert isinstance(transactional, TransactionalEventStore)
        lease = await one.lease_store().try_acquire("projection-1")
        assert lease is not None
        assert await two.lease_store().try_acquire("projection-1") is None
        assert await prefixed.lease_store().try_acquire("projection-1") is not None
        assert await elsewhere.lease_store().try_acquire("projection-1") is not None
        await lease.release()
        assert not await lease.check()
        assert await two.lease_store().try_acquire("projection-1") is not None


# -- the tip: an inline append after an inline append skips the state query -----------


async def test_inline_appends_after_inline_appends_start_from_the_last_tip(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(1))  # on the writer thread, which primes the WAL
        await anyio.sleep(0.05)
        before = handed_off(store)
        statements: list[str] = []
        assert store._writer.connection is not None
        store._writer.connection.set_trace_callback(statements.append)
        try:
            await store.append("s", deposits(1), expected_version=1)  # looks the state up
            statements.clear()
            result = await store.append("s", deposits(2), expected_version=2)  # from the tip
            other = await store.append("t", deposits(1))  # the stream's state, not the position
        finally:
            store._writer.connection.set_trace_callback(None)
        assert handed_off(store) == before
        assert not any("max(position)" in s for s in statements)
        assert sum("max(stream_version)" in s for s in statements) == 1  # for "t" only
        assert (result.stream_version, result.global_position) == (4, 4)
        assert (other.stream_version, other.global_position) == (1, 5)
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", deposits(1), expected_version=2)  # the tip still checks
        assert [e.global_position async for e in store.read_all()] == [1, 2, 3, 4, 5]


async def test_any_other_write_makes_the_next_inline_append_look_the_state_up(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(1))
        await anyio.sleep(0.05)
        await store.append("s", deposits(1), expected_version=1)
        # Through the writer thread: erase the newest events, and write in a transaction.
        await store.delete_stream("s", hard=True)
        later = await store.append("t", deposits(1))
        assert later.global_position == 3  # not reused: the high-water mark was looked up
        await store.append("t", deposits(1), expected_version=1)
        async with store.transaction() as tx:
            await tx.append("t", deposits(1), expected_version=2)
        with pytest.raises(WrongExpectedVersion):
            await store.append("t", deposits(1), expected_version=2)
        result = await store.append("t", deposits(1), expected_version=3)
        assert (result.stream_version, result.global_position) == (4, 6)
        # Another connection: its commit sends the next append to the thread, which looks up.
        query(
            db,
            "INSERT INTO uno_events VALUES (7, 't', 5, randomblob(16), 0, 'x', 1, x'', x'', 0)",
        )
        with pytest.raises(WrongExpectedVersion):
            await store.append("t", deposits(1), expected_version=4)
        await anyio.sleep(0.05)
        result = await store.append("t", deposits(1), expected_version=5)
        assert (result.stream_version, result.global_position) == (6, 8)


async def test_a_retried_inline_append_returns_the_stored_result_and_drops_the_tip(
    db: Path, registry: EventRegistry
) -> None:
    async with await open_store(db, registry) as store:
        await store.append("s", deposits(1))
        await anyio.sleep(0.05)
        events = deposits(1, 10)
        first = await store.append("s", events, expected_version=1)
        await store.append("s", deposits(1), expected_version=2)
        again = await store.append("s", events, expected_version=1)  # a retry: a no-op
        assert again == first
        assert store._tip is None
        result = await store.append("s", deposits(1), expected_version=3)
        assert (result.stream_version, result.global_position) == (4, 4)


async def test_the_notifier_makes_a_ticket_only_for_someone_who_waits() -> None:
    notifier = Notifier()
    notifier.notify()  # nobody waits: nothing to set, nothing made
    assert notifier._event is None
    ticket = notifier.ticket
    assert notifier.ticket is ticket
    assert not ticket.is_set()
    notifier.notify()
    assert ticket.is_set()
    later = notifier.ticket
    assert later is not ticket
    assert not later.is_set()
    notifier.close()
    assert later.is_set()
    assert notifier.ticket.is_set()
    notifier.notify()
    assert notifier.ticket.is_set()
    fresh = Notifier()
    fresh.close()
    assert fresh.ticket.is_set()
    await fresh.wait(fresh.ticket, 10)  # returns at once
