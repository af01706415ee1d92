"""SQLite leases: rows with an expiry in the store's file, held by the processes of a machine."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from uno.event_storage.exceptions import (
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
)
from uno.event_storage.sqlite import SQLiteEventStore, SQLiteLease, SQLiteLeaseStore
from uno.event_storage.testing import LeaseStoreContract, NewHolder, contract_registry
from uno.events import Lease

pytestmark = pytest.mark.anyio

HOLDER = Path(__file__).with_name("sqlite_lease_holder.py")
TTL = 0.6  # seconds: short, so that expiry shows within a test


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteEventStore]:
    async with await SQLiteEventStore.from_url(
        f"sqlite:///{db}", registry=contract_registry(), lease_ttl=TTL
    ) as store:
        yield store


def row(db: Path, name: str) -> tuple[int, str, int] | None:
    """Return a lease's ``(generation, holder, expires_at)`` as plain sqlite3 reads it."""
    with closing(sqlite3.connect(db)) as connection:
        found = connection.execute(
            "SELECT generation, holder, expires_at FROM uno_leases WHERE name = ?", (name,)
        ).fetchone()
    return None if found is None else (int(found[0]), str(found[1]), int(found[2]))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Hold the file's write lock from another connection, as a long write elsewhere would."""
    connection = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


class TestSQLiteLeases(LeaseStoreContract):
    @pytest.fixture
    def new_holder(self, store: SQLiteEventStore) -> NewHolder:
        return store.lease_store

    @pytest.fixture
    def lose(self, db: Path) -> Callable[[Lease], Awaitable[None]]:
        """Keep the holder from renewing (another holds the write lock) until it gives up."""

        async def lose(lease: Lease) -> None:
            with write_locked(db), anyio.fail_after(10):
                while await lease.check():  # noqa: ASYNC110 - the lease has no event to wait on
                    await anyio.sleep(0.02)

        return lose


# -- in one process -------------------------------------------------------------------


async def test_a_held_lease_is_renewed_past_its_ttl(store: SQLiteEventStore, db: Path) -> None:
    lease = await store.lease_store().try_acquire("p")
    assert isinstance(lease, SQLiteLease)
    first = row(db, "p")
    assert first is not None
    assert first[:2] == (1, lease.holder)
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        assert await lease.check()
        await anyio.sleep(0.05)
    renewed = row(db, "p")
    assert renewed is not None
    assert renewed[2] > first[2]
    assert await store.lease_store().try_acquire("p") is None
    await lease.release()


async def test_each_holder_of_a_name_gets_the_next_generation(
    store: SQLiteEventStore, db: Path
) -> None:
    generations = []
    for _ in range(3):
        lease = await store.lease_store().try_acquire("p")
        assert isinstance(lease, SQLiteLease)
        generations.append(lease.generation)
        await lease.release()
        released = row(db, "p")
        assert released is not None
        assert released[2] == 0  # free at once, and the row keeps its generation
    assert generations == [1, 2, 3]


async def test_a_lease_expired_while_the_file_was_locked_is_taken_over_after_its_expiry(
    store: SQLiteEventStore, db: Path
) -> None:
    """The old holder gives its lease up no later than its row expires; the next takes it after."""
    old = await store.lease_store().try_acquire("p")
    assert isinstance(old, SQLiteLease)
    with write_locked(db), anyio.fail_after(10):
        last_ok = checked = now_ms()
        while await old.check():
            last_ok = checked
            await anyio.sleep(0.01)
            checked = now_ms()
    stored = row(db, "p")
    assert stored is not None
    assert stored[1] == old.holder
    assert last_ok < stored[2]  # its last passing check came before its row expired
    new = store.lease_store()
    with anyio.fail_after(10):
        while (successor := await new.try_acquire("p")) is None:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert now_ms() >= stored[2]
    assert isinstance(successor, SQLiteLease)
    assert successor.generation == old.generation + 1
    await anyio.sleep(TTL / 2)  # the old holder's heartbeat comes round, and renews nothing
    assert not await old.check()
    await old.release()
    after = row(db, "p")
    assert after is not None
    assert after[:2] == (2, successor.holder)
    assert after[2] > now_ms()
    assert await successor.check()
    await successor.release()


async def test_releasing_the_last_lease_ends_the_heartbeat(store: SQLiteEventStore) -> None:
    leases = store.lease_store()
    lease = await leases.try_acquire("p")
    assert lease is not None
    assert leases.held() == ["p"]

    def beating() -> bool:
        return leases._heartbeat is not None

    assert beating()
    await lease.release()
    assert leases.held() == []
    with anyio.fail_after(5):
        while beating():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert leases._connection is None


async def test_an_unmigrated_file_raises_schema_not_migrated(db: Path) -> None:
    sqlite3.connect(db).close()
    with pytest.raises(SchemaNotMigrated) as info:
        await SQLiteLeaseStore(db).try_acquire("p")
    assert (info.value.have, info.value.where) == (0, str(db))


async def test_a_missing_file_raises_store_unavailable_and_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await SQLiteLeaseStore(tmp_path / "missing.db").try_acquire("p")
    assert not (tmp_path / "missing.db").exists()


async def test_a_write_lock_held_past_busy_timeout_raises_store_unavailable(
    store: SQLiteEventStore, db: Path
) -> None:
    leases = SQLiteLeaseStore(db, busy_timeout=0.1)
    with write_locked(db), pytest.raises(StoreUnavailable, match="write lock"):
        await leases.try_acquire("p")
    lease = await leases.try_acquire("p")
    assert lease is not None
    await lease.release()


@pytest.mark.parametrize("options", [{"ttl": 0}, {"ttl": -1.0}, {"busy_timeout": -1}])
def test_bad_lease_options_are_refused(db: Path, options: dict[str, Any]) -> None:
    with pytest.raises(StoreConfigurationError):
        SQLiteLeaseStore(db, **options)


def test_a_store_refuses_a_lease_ttl_that_is_not_positive(db: Path) -> None:
    with pytest.raises(StoreConfigurationError, match="lease_ttl"):
        SQLiteEventStore(db, registry=contract_registry(), lease_ttl=0)


# -- across processes -----------------------------------------------------------------


class Holders:
    """Lease holder processes (``sqlite_lease_holder.py``) on one file, started together."""

    def __init__(self, db: Path, tmp_path: Path) -> None:
        self.db = db
        self.tmp_path = tmp_path
        self.go = tmp_path / "go"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, ttl: float, *mode: str) -> None:
        log = self.tmp_path / f"{name}.log"
        with (self.tmp_path / f"{name}.out").open("wb") as out:
            self.processes[name] = subprocess.Popen(  # noqa: S603 - our interpreter and script
                [
                    sys.executable,
                    str(HOLDER),
                    str(self.db),
                    str(ttl),
                    str(self.go),
                    str(log),
                    *mode,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def records(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.tmp_path / f"{name}.log"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [json.loads(line) for line in lines if line.endswith("}")]
        return [r for r in found if kind is None or r["kind"] == kind]

    async def wait_for(self, name: str, kind: str) -> dict[str, Any]:
        with anyio.fail_after(30):
            while True:
                found = self.records(name, kind)
                if found:
                    return found[0]
                process = self.processes[name]
                if process.poll() is not None and not self.records(name, kind):
                    output = (self.tmp_path / f"{name}.out").read_text()
                    raise AssertionError(f"{name} exited ({process.returncode}): {output}")
                await anyio.sleep(0.02)

    async def start_together(self) -> None:
        for name in self.processes:
            await self.wait_for(name, "ready")
        self.go.touch()

    async def wait_until_exited(self, name: str) -> int:
        process = self.processes[name]
        with anyio.fail_after(30):
            while process.poll() is None:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        return process.returncode

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def holders(store: SQLiteEventStore, db: Path, tmp_path: Path) -> Iterator[Holders]:
    """Lease holder processes on the store's (migrated) file, killed after the test."""
    running = Holders(db, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


async def test_of_two_processes_one_holds_and_the_other_takes_over_only_after_its_kill_and_expiry(
    holders: Holders, db: Path
) -> None:
    ttl = 3.0  # long enough that the survivor's attempts right after the kill come before expiry
    holders.start("a", ttl, "hold", "job")
    holders.start("b", ttl, "hold", "job")
    await holders.start_together()
    with anyio.fail_after(30):
        while not (held := holders.records("a", "held") + holders.records("b", "held")):  # noqa: ASYNC110
            await anyio.sleep(0.02)
    await anyio.sleep(ttl / 2)  # the other keeps trying meanwhile, every 20 ms
    assert len(holders.records("a", "held") + holders.records("b", "held")) == 1
    (first,) = held
    victim = "a" if holders.records("a", "held") else "b"
    survivor = "b" if victim == "a" else "a"
    os.kill(holders.processes[victim].pid, signal.SIGKILL)
    holders.processes[victim].wait()
    killed_at = now_ms()
    stored = row(db, "job")
    assert stored is not None
    generation, holder, expires_at = stored
    assert (generation, holder) == (first["generation"], first["holder"])
    assert expires_at > killed_at  # the dead holder's row still holds the name for a while
    second = await holders.wait_for(survivor, "held")
    assert second["after"] >= expires_at  # not before the dead holder's lease expired
    assert second["generation"] == first["generation"] + 1
    assert second["refused"] > 0


async def test_a_stopped_holder_loses_its_lease_and_learns_so_once_resumed(
    holders: Holders, store: SQLiteEventStore, db: Path
) -> None:
    holders.start("a", 1.0, "hold", "job")
    await holders.start_together()
    held = await holders.wait_for("a", "held")
    process = holders.processes["a"]
    os.kill(process.pid, signal.SIGSTOP)
    stopped_at = now_ms()
    try:
        leases = store.lease_store(ttl=10.0)
        with anyio.fail_after(15):
            while (successor := await leases.try_acquire("job")) is None:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        taken_at = now_ms()
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert isinstance(successor, SQLiteLease)
    assert successor.generation == held["generation"] + 1
    lost = await holders.wait_for("a", "lost")
    assert lost["last_ok"] <= stopped_at  # no check passed after the stop
    assert lost["noticed"] >= taken_at  # it learned once it resumed
    assert await holders.wait_until_exited("a") == 0  # after releasing what it lost
    assert await successor.check()
    stored = row(db, "job")
    assert stored is not None
    assert stored[:2] == (successor.generation, successor.holder)
    assert stored[2] > now_ms()
    await successor.release()


async def test_many_leases_across_three_processes_are_never_held_twice(
    holders: Holders, db: Path
) -> None:
    names = ["n0", "n1", "n2", "n3"]
    holders.start("p0", 0.5, "churn", "3", *names)
    holders.start("p1", 0.5, "churn", "3", *names)
    holders.start("p2", 0.5, "churn", "3", *names, "--die-after", "1.0")
    await holders.start_together()
    for name in ("p0", "p1"):
        await holders.wait_for(name, "done")
    await holders.wait_until_exited("p2")
    holds = [
        {**record, "process": name}
        for name in ("p0", "p1", "p2")
        for record in holders.records(name, "hold")
    ]
    assert all(holders.records(name, "hold") for name in ("p0", "p1", "p2"))
    assert sum(r["refused"] for name in ("p0", "p1") for r in holders.records(name, "done")) > 0
    for name in names:
        of_name = sorted((h for h in holds if h["name"] == name), key=lambda h: h["generation"])
        generations = [h["generation"] for h in of_name]
        assert len(set(generations)) == len(generations), f"{name}: a generation given twice"
        for earlier, later in itertools.pairwise(of_name):
            # Sound bounds: the earlier lease passed a check at or after its last_ok, and
            # the later one was taken at or before its acquired.
            assert earlier["last_ok"] <= later["acquired"], (name, earlier, later)
    (dying,) = holders.records("p2", "dying")
    successors = [
        h for h in holds if h["name"] == dying["name"] and h["generation"] > dying["generation"]
    ]
    assert successors, "the killed process's lease was taken over after it expired"
