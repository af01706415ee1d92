"""Repositories load from snapshot + later events, and save with the loaded version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from bank import (
    Account,
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    SnapshottedAccount,
)

from uno.event_sourcing import (
    AggregateNotFound,
    AggregateSnapshot,
    ConcurrencyConflict,
    EveryNEvents,
    Repository,
    SnapshotWhen,
    applies,
    register_types,
)
from uno.event_storage import ClosableEventStore, open_event_store
from uno.events import NO_STREAM, Event, EventRegistry, Snapshot, upcaster

pytestmark = pytest.mark.anyio


async def test_a_saved_aggregate_loads_back_equal(store: ClosableEventStore) -> None:
    accounts = Repository(store, Account)
    account = Account.open("a", owner="ada")
    account.deposit(10)
    result = await accounts.save(account)
    assert result is not None
    assert result.stream_version == 2
    assert (account.version, account.loaded_version, account.pending_events) == (2, 2, ())
    loaded = await accounts.get("a")
    assert (loaded.owner, loaded.balance, loaded.version) == ("ada", 10, 2)
    stored = await store.read_stream("account-a")
    assert [e.data for e in stored] == [AccountOpened(owner="ada"), MoneyDeposited(amount=10)]
    assert await accounts.exists("a")
    assert not await accounts.exists("b")
    assert await accounts.save(loaded) is None  # nothing pending: nothing written


async def test_loading_an_unknown_id_raises_aggregate_not_found(store: ClosableEventStore) -> None:
    with pytest.raises(AggregateNotFound, match="No Account with id 'nope'") as info:
        await Repository(store, Account).get("nope")
    assert info.value.code == "event_sourcing.aggregate_not_found"


async def test_a_deleted_stream_is_not_found(store: ClosableEventStore) -> None:
    accounts = Repository(store, Account)
    await accounts.save(Account.open("d", owner="x"))
    await store.delete_stream("account-d")
    with pytest.raises(AggregateNotFound):
        await accounts.get("d")


async def test_concurrent_saves_conflict_and_the_loser_writes_nothing(
    store: ClosableEventStore,
) -> None:
    accounts = Repository(store, Account)
    await accounts.save(Account.open("c", owner="ada"))
    first, second = await accounts.get("c"), await accounts.get("c")
    first.deposit(5)
    second.deposit(7)
    await accounts.save(first)
    with pytest.raises(ConcurrencyConflict) as info:
        await accounts.save(second)
    assert (info.value.expected_version, info.value.actual_version) == (1, 2)
    assert info.value.code == "event_sourcing.concurrency_conflict"
    assert [e.data for e in await store.read_stream("account-c")][-1] == MoneyDeposited(amount=5)
    assert len(second.pending_events) == 1  # kept, so the caller can inspect or retry


async def test_creating_an_existing_aggregate_conflicts(store: ClosableEventStore) -> None:
    accounts = Repository(store, Account)
    await accounts.save(Account.open("dup", owner="ada"))
    with pytest.raises(ConcurrencyConflict) as info:
        await accounts.save(Account.open("dup", owner="eve"))
    assert (info.value.expected_version, info.value.actual_version) == (0, 1)
    assert len(await store.read_stream("account-dup")) == 1


async def test_many_tasks_saving_one_aggregate_each_win_once(store: ClosableEventStore) -> None:
    """Of N tasks that load the same version and save, exactly one wins each round."""
    accounts = Repository(store, Account)
    await accounts.save(Account.open("race", owner="ada"))
    wins = 0

    async def deposit_once() -> None:
        nonlocal wins
        account = await accounts.get("race")
        account.deposit(1)
        try:
            await accounts.save(account)
        except ConcurrencyConflict:
            return
        wins += 1

    for _ in range(3):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(deposit_once)
    loaded = await accounts.get("race")
    assert loaded.balance == wins == loaded.version - 1
    assert 3 <= wins <= 24


async def test_load_as_of_a_version(store: ClosableEventStore) -> None:
    accounts = Repository(store, SnapshottedAccount)
    account = SnapshottedAccount.open("v", owner="ada")
    for amount in (1, 2, 4, 8, 16):
        account.deposit(amount)
    await accounts.save(account)
    assert (await accounts.get("v", version=3)).balance == 3
    assert (await accounts.get("v", version=6)).balance == 31
    with pytest.raises(AggregateNotFound):
        await accounts.get("v", version=7)


async def test_snapshots_are_taken_by_policy_and_used_on_load(store: ClosableEventStore) -> None:
    accounts = Repository(store, SnapshottedAccount)  # EveryNEvents(3)
    account = SnapshottedAccount.open("s", owner="ada")
    account.deposit(1)
    await accounts.save(account)  # version 2: no snapshot
    assert await store.load_snapshot("saccount-s") is None
    account.deposit(2)
    account.deposit(3)
    await accounts.save(account)  # 2 -> 4 crosses 3: snapshot at 4
    snapshot = await store.load_snapshot("saccount-s")
    assert snapshot is not None
    assert snapshot.stream_version == 4
    account.deposit(4)
    await accounts.save(account)
    loaded = await accounts.get("s")
    assert loaded.applied == ["snapshot", "deposited"]  # snapshot at 4, then event 5
    assert (loaded.balance, loaded.version, loaded.owner) == (10, 5, "ada")


async def test_a_snapshot_of_another_class_version_is_ignored(store: ClosableEventStore) -> None:
    accounts = Repository(store, SnapshottedAccount)
    account = SnapshottedAccount.open("old", owner="ada")
    account.deposit(5)
    await accounts.save(account)
    # A snapshot written by an earlier version of the class, with another shape.
    await store.save_snapshot(
        Snapshot(
            stream_id="saccount-old",
            stream_version=2,
            state=AggregateSnapshot(
                aggregate_type="SnapshottedAccount", snapshot_version=0, state=b"\x93\x01\x02\x03"
            ),
        )
    )
    loaded = await accounts.get("old")
    assert loaded.applied == ["opened", "deposited"]  # rebuilt from events
    assert loaded.balance == 5


async def test_a_predicate_policy_and_an_explicit_snapshot(store: ClosableEventStore) -> None:
    big = SnapshotWhen(lambda aggregate, _: getattr(aggregate, "balance", 0) >= 100)
    accounts = Repository(store, Account, snapshot_policy=big)
    account = Account.open("p", owner="ada")
    account.deposit(50)
    await accounts.save(account)
    assert await store.load_snapshot("account-p") is None
    account.deposit(60)
    await accounts.save(account)
    snapshot = await store.load_snapshot("account-p")
    assert snapshot is not None
    assert snapshot.stream_version == 3
    never = Repository(store, SnapshottedAccount, snapshot_policy=None)
    manual = SnapshottedAccount.open("m", owner="x")
    for _ in range(5):
        manual.deposit(1)
    await never.save(manual)
    assert await store.load_snapshot("saccount-m") is None
    await never.save_snapshot(manual)
    assert (await never.get("m")).applied == ["snapshot"]


def test_a_policy_without_snapshot_methods_is_refused() -> None:
    from uno.event_sourcing import Aggregate  # noqa: PLC0415

    class Plain(Aggregate):
        snapshot_policy = EveryNEvents(2)

    with pytest.raises(TypeError, match="snapshot_type"):
        Repository(object(), Plain)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n >= 1"):
        EveryNEvents(0)


async def test_a_stored_stream_loads_with_a_new_aggregate_created_with_no_stream(
    store: ClosableEventStore,
) -> None:
    await store.append("account-raw", [AccountOpened(owner="raw")], expected_version=NO_STREAM)
    loaded = await Repository(store, Account).get("raw")
    assert loaded.owner == "raw"


class DepositedV1(Event):
    """How an older release recorded a deposit: in whole euros."""

    event_type = "bank.MoneyDeposited"
    euros: int


async def test_loading_applies_upcasters_to_old_event_versions(tmp_path: Path) -> None:
    """Events stored by an older release reach the aggregate in today's shape."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = EventRegistry()
    old.register(AccountOpened, DepositedV1)
    async with open_event_store(url, registry=old, auto_migrate=True) as store:
        await store.append("account-legacy", [AccountOpened(owner="ada"), DepositedV1(euros=3)])

    class MoneyDepositedV2(MoneyDeposited):
        event_type = "bank.MoneyDeposited"
        event_version = 2

    @upcaster("bank.MoneyDeposited", from_version=1)
    def to_cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": data["euros"] * 100}

    class Current(Account):
        category = "account"

        @applies(MoneyDepositedV2)
        def _deposited_v2(self, event: MoneyDepositedV2) -> None:
            self.balance += event.amount

    registry = bank_registry_without_deposits()
    registry.register(MoneyDepositedV2, upcasters=[to_cents])
    async with open_event_store(url, registry=registry) as store:
        loaded = await Repository(store, Current).get("legacy")
    assert (loaded.owner, loaded.balance, loaded.version) == ("ada", 300, 2)


def bank_registry_without_deposits() -> EventRegistry:
    registry = register_types(EventRegistry())
    registry.register(AccountOpened, MoneyWithdrawn, AccountClosed)
    return registry
