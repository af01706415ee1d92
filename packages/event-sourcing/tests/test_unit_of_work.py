"""A unit of work saves several aggregates and inline read models atomically, then notifies."""

from __future__ import annotations

import pytest
from bank import Account, AccountOpened, MoneyDeposited, MoneyWithdrawn, SnapshottedAccount

from uno.event_sourcing import ConcurrencyConflict, Repository, UnitOfWork
from uno.event_sourcing._projection import TransactionalProjection, handles
from uno.event_sourcing.exceptions import UnitOfWorkError
from uno.event_storage import ClosableEventStore
from uno.events import Event, RecordedEvent, StoreTransaction

pytestmark = pytest.mark.anyio


class Balances(TransactionalProjection):
    """A read model kept in a stream's metadata: written in the transaction on every backend."""

    name = "balances"

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on

    async def _add(self, tx: StoreTransaction, stream_id: str, delta: int) -> None:
        if self.fail_on is not None and delta == self.fail_on:
            raise RuntimeError("read model write failed")
        balances = dict(await tx.get_stream_metadata("view-balances"))
        balances[stream_id] = balances.get(stream_id, 0) + delta
        await tx.set_stream_metadata("view-balances", balances)

    @handles
    async def _deposited(self, event: RecordedEvent[MoneyDeposited], tx: StoreTransaction) -> None:
        await self._add(tx, event.stream_id, event.data.amount)

    @handles
    async def _withdrawn(self, event: RecordedEvent[MoneyWithdrawn], tx: StoreTransaction) -> None:
        await self._add(tx, event.stream_id, -event.data.amount)


async def seed(store: ClosableEventStore) -> Repository[Account]:
    accounts = Repository(store, Account)
    for name, amount in (("a", 100), ("b", 5)):
        account = Account.open(name, owner=name)
        account.deposit(amount)
        await accounts.save(account)
    return accounts


async def test_a_transfer_saves_both_accounts_in_one_append(store: ClosableEventStore) -> None:
    accounts = await seed(store)
    async with UnitOfWork(store) as uow:
        source, target = await uow.get(accounts, "a"), await uow.get(accounts, "b")
        assert await uow.get(accounts, "a") is source  # one instance per id
        source.withdraw(30)
        target.deposit(30)
    assert [r.stream_version for r in uow.results] == [3, 3]
    assert (await accounts.get("a")).balance == 70
    assert (await accounts.get("b")).balance == 35
    positions = [
        e.global_position
        for e in [*await store.read_stream("account-a"), *await store.read_stream("account-b")]
    ]
    assert len(set(positions)) == 4 + 2


async def test_a_conflict_on_one_aggregate_writes_nothing_for_any(
    store: ClosableEventStore,
) -> None:
    accounts = await seed(store)
    uow = UnitOfWork(store)
    source, target = await uow.get(accounts, "a"), await uow.get(accounts, "b")
    source.withdraw(30)
    target.deposit(30)
    meddler = await accounts.get("b")
    meddler.deposit(1)
    await accounts.save(meddler)
    with pytest.raises(ConcurrencyConflict) as info:
        await uow.commit()
    assert (info.value.stream_id, info.value.expected_version, info.value.actual_version) == (
        "account-b",
        2,
        3,
    )
    assert (await accounts.get("a")).balance == 100
    assert (await accounts.get("b")).balance == 6
    with pytest.raises(UnitOfWorkError, match="failed"):
        await uow.commit()


async def test_inline_projections_commit_with_the_events(store: ClosableEventStore) -> None:
    accounts = await seed(store)
    balances = Balances()
    async with UnitOfWork(store, projections=[balances]) as uow:
        source, target = await uow.get(accounts, "a"), await uow.get(accounts, "b")
        source.withdraw(30)
        target.deposit(30)
        uow.add(Account.open("c", owner="c"))
    assert await store.get_stream_metadata("view-balances") == {"account-a": -30, "account-b": 30}
    assert await accounts.exists("c")


async def test_a_failing_inline_projection_rolls_the_events_back(
    store: ClosableEventStore,
) -> None:
    accounts = await seed(store)
    with pytest.raises(RuntimeError, match="read model write failed"):
        async with UnitOfWork(store, projections=[Balances(fail_on=30)]) as uow:
            source, target = await uow.get(accounts, "a"), await uow.get(accounts, "b")
            source.withdraw(5)
            target.deposit(30)  # fails in the projection, after the withdrawal was projected
    assert (await accounts.get("a")).balance == 100
    assert (await accounts.get("b")).balance == 5
    assert await store.get_stream_metadata("view-balances") == {}
    assert await store.log_position() == max(
        e.global_position for e in await store.read_stream("account-b")
    )


async def test_subscribers_hear_of_events_only_after_commit(store: ClosableEventStore) -> None:
    accounts = await seed(store)
    heard: list[tuple[str, Event, bool]] = []

    async def subscriber(event: RecordedEvent[Event]) -> None:
        # The event is readable by anyone when the subscriber runs.
        stored = await store.read_stream(event.stream_id, from_version=event.stream_version)
        heard.append((event.stream_id, event.data, bool(stored)))

    async def broken(event: RecordedEvent[Event]) -> None:
        raise RuntimeError("subscribers are best effort")

    with pytest.raises(ConcurrencyConflict):
        async with UnitOfWork(store, subscribers=[subscriber]) as uow:
            uow.add(Account.open("a", owner="again"))
    assert heard == []
    async with UnitOfWork(store, subscribers=[broken, subscriber]) as uow:
        (await uow.get(accounts, "a")).withdraw(1)
        uow.add(Account.open("z", owner="zed"))
    assert heard == [
        ("account-a", MoneyWithdrawn(amount=1), True),
        ("account-z", AccountOpened(owner="zed"), True),
    ]


async def test_an_exception_in_the_block_discards_everything(store: ClosableEventStore) -> None:
    accounts = await seed(store)
    with pytest.raises(KeyError):
        async with UnitOfWork(store) as uow:
            (await uow.get(accounts, "a")).withdraw(1)
            raise KeyError("command failed")
    assert (await accounts.get("a")).balance == 100
    with pytest.raises(UnitOfWorkError, match="rolled back"):
        await uow.get(accounts, "a")


async def test_unit_of_work_applies_snapshot_policies_and_metadata(
    store: ClosableEventStore,
) -> None:
    from uno.events import EventMetadata  # noqa: PLC0415

    async with UnitOfWork(store, metadata=EventMetadata(correlation_id="cmd-1")) as uow:
        account = SnapshottedAccount.open("s", owner="x")
        for amount in (1, 2, 3):
            account.deposit(amount)
        uow.add(account)
    snapshot = await store.load_snapshot("saccount-s")
    assert snapshot is not None
    assert snapshot.stream_version == 4
    assert {e.metadata.correlation_id for e in await store.read_stream("saccount-s")} == {"cmd-1"}


async def test_two_instances_of_one_aggregate_are_refused(store: ClosableEventStore) -> None:
    uow = UnitOfWork(store)
    uow.add(Account.open("t", owner="x"))
    with pytest.raises(UnitOfWorkError, match="another instance"):
        uow.add(Account.open("t", owner="y"))
    assert [r.stream_version for r in await uow.commit()] == [1]
    with pytest.raises(UnitOfWorkError, match="committed"):
        await uow.commit()
