"""Partitioned projections: split by stream hash, one lease per partition, taken over on death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import anyio
import pytest
from ledger import (
    Balances,
    Credited,
    SqlBalances,
    StoreOpener,
    event_ids,
    expected_balances,
    ledger_registry,
    read_model,
)

from uno.event_sourcing import ProjectionRunner, ProjectionState, partition_of
from uno.event_sourcing.exceptions import ProjectionConfigurationError
from uno.event_storage import InMemoryEventStore, open_event_store
from uno.events import TransactionalEventStore

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("partition_worker.py")


class Split(Balances):
    name = "split"
    partitions = 4


def test_partition_of_is_a_stable_crc32_of_the_stream_id() -> None:
    assert partition_of("acct-1", 4) == zlib.crc32(b"acct-1") % 4
    seen = Counter(partition_of(f"acct-{i}", 4) for i in range(400))
    assert set(seen) == {0, 1, 2, 3}
    assert min(seen.values()) > 60  # roughly even


def test_partitions_must_be_a_positive_int() -> None:
    with pytest.raises(ProjectionConfigurationError):

        class Broken(Balances):
            name = "broken"
            partitions = 0


async def test_one_runner_takes_every_partition_and_each_has_its_checkpoint(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        for i in range(40):
            await store.append(f"acct-{i % 10}", [Credited(amount=i)])
        split = Split()
        async with ProjectionRunner(store, [split], checkpoint_interval=0) as runner:
            await runner.wait_until_caught_up(timeout=10)
            assert runner.held_partitions() == [f"split#{i}/4" for i in range(4)]
            status = await runner.status()
            assert sorted(status) == [f"split#{i}/4" for i in range(4)]
            assert all(s.lag_events == 0 for s in status.values())
        assert dict(split.balances) == await expected_balances(store)
        assert set(split.applied.values()) == {1}
        for i in range(4):
            assert await store.load_checkpoint(f"split#{i}/4") is not None
        with pytest.raises(ProjectionConfigurationError, match="partitioned"):
            async with ProjectionRunner(store, [Split()]) as runner:
                await runner.rebuild("split")


async def test_runners_share_partitions_and_one_takes_over_when_the_other_stops() -> None:
    async with InMemoryEventStore(ledger_registry()) as store:
        leases = store.lease_store()
        first, second = Split(), Split()

        def runner(split: Split) -> ProjectionRunner:
            return ProjectionRunner(
                store, [split], leases=leases, lease_interval=0.05, max_partitions=2
            )

        async with runner(first) as one:
            async with runner(second) as two:
                assert len(one.held_partitions()) == len(two.held_partitions()) == 2
                assert set(one.held_partitions()).isdisjoint(two.held_partitions())
                for i in range(20):
                    await store.append(f"acct-{i}", [Credited(amount=1)])
                await one.wait_until_caught_up(timeout=10)
                await two.wait_until_caught_up(timeout=10)
                assert (await one.status())[
                    two.held_partitions()[0]
                ].state is ProjectionState.STOPPED
            # ``two`` released its leases; ``one`` may hold only 2 of the 4.
            await anyio.sleep(0.2)
            assert len(one.held_partitions()) == 2
        applied = first.applied + second.applied
        assert set(applied.values()) == {1}
        assert len(applied) == 20


async def test_a_lost_lease_stops_its_partition_until_the_lease_is_taken_again() -> None:
    async with InMemoryEventStore(ledger_registry()) as store:
        leases = store.lease_store()
        split = Split()
        async with ProjectionRunner(store, [split], leases=leases, lease_interval=0.05) as runner:
            await runner.wait_until_caught_up(timeout=5)
            taken = await leases.try_acquire("split#0/4")
            assert taken is None  # the runner holds it
            leases.revoke("split#0/4")  # as if its connection died...
            thief = await leases.try_acquire("split#0/4")  # ...and another process took it
            assert thief is not None
            with anyio.fail_after(5):
                while "split#0/4" in runner.held_partitions():  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            assert "split#0/4" not in runner.held_partitions()
            assert (await runner.status())["split#0/4"].state is ProjectionState.STOPPED
            await thief.release()
            with anyio.fail_after(5):
                while "split#0/4" not in runner.held_partitions():  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            stream = next(f"acct-{i}" for i in range(100) if partition_of(f"acct-{i}", 4) == 0)
            await store.append(stream, [Credited(amount=3)])
            await runner.wait_until_caught_up(timeout=5)
        assert split.balances[stream] == 3


def _start(url: str, schema: str, name: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(WORKER), url, schema, name, "4", "2", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _held(state: Path) -> list[str]:
    try:
        return list(json.loads(state.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return []


async def _wait_for_all(store: TransactionalEventStore, projection: SqlBalances, n: int) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        model = await read_model(store, projection)
        if len(model.times) >= n:
            return
        await anyio.sleep(0.1)
    raise AssertionError(f"the read model has {len(model.times)} of {n} events")


async def _share_and_take_over(
    store: TransactionalEventStore, url: str, schema: str, tmp_path: Path
) -> None:
    """Three runner processes share the 4 partitions; a killed one's go to the others."""
    projection = SqlBalances(schema=schema or None)
    async with store.transaction() as tx:
        await projection.create_tables(tx)
    for i in range(120):
        await store.append(f"acct-{i % 24}", [Credited(amount=i)])
    names = ["p0", "p1", "p2"]
    processes = {
        name: _start(url, schema, name, tmp_path / f"{name}.json", tmp_path / f"{name}.log")
        for name in names
    }
    try:
        await _wait_for_all(store, projection, 120)
        held = {name: _held(tmp_path / f"{name}.json") for name in names}
        assert sorted(p for ps in held.values() for p in ps) == [
            f"sql-balances#{i}/4" for i in range(4)
        ]
        # Each holds at most 2, so the split is 2/2/0 or 2/1/1: the survivors have room.
        victim = next(name for name in names if held[name])
        survivors = [name for name in names if name != victim]
        os.kill(processes[victim].pid, signal.SIGKILL)
        processes[victim].wait()
        for i in range(120, 200):
            await store.append(f"acct-{i % 24}", [Credited(amount=i)])
        await _wait_for_all(store, projection, 200)
        with anyio.fail_after(10):
            while True:
                now = {p: name for name in survivors for p in _held(tmp_path / f"{name}.json")}
                if all(name in now for name in held[victim]):
                    break
                await anyio.sleep(0.05)
        model = await read_model(store, projection)
        assert model.times == dict.fromkeys(await event_ids(store), 1)
        assert model.balances == await expected_balances(store)
        # Each partition's events went to one process at a time; the victim's moved on.
        by_partition: dict[int, set[str]] = {}
        async for event in store.read_all(after=0):
            if event.global_position and str(event.event_id) in model.workers:
                part = partition_of(event.stream_id, 4)
                by_partition.setdefault(part, set()).add(model.workers[str(event.event_id)])
        for name in held[victim]:
            part = int(name.split("#")[1].split("/")[0])
            assert by_partition[part] == {victim, now[name]}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


async def test_runner_processes_on_one_sqlite_file_apply_each_event_once_and_take_over_a_killed_one(
    tmp_path: Path,
) -> None:
    """On SQLite the partitions' leases are rows of the file that the processes share."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    async with open_event_store(url, registry=ledger_registry()) as store:
        assert isinstance(store, TransactionalEventStore)
        await _share_and_take_over(store, url, "", tmp_path)


async def test_runner_processes_on_postgres_apply_every_event_once_and_take_over_a_killed_one(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    async with open_event_store(
        postgres_url, registry=ledger_registry(), schema=pg_schema, auto_migrate=True
    ) as store:
        assert isinstance(store, TransactionalEventStore)
        await _share_and_take_over(store, postgres_url, pg_schema, tmp_path)
