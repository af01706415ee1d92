"""The in-memory backend passes the conformance kit, and keeps its own promises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import pytest

from uno.event_storage import (
    EventStoreBase,
    InMemoryEventStore,
    InMemoryLeaseStore,
    open_event_store,
)
from uno.event_storage._prepared import DECODE_CHUNK, Row
from uno.event_storage.exceptions import StoreConfigurationError, StreamDeleted
from uno.event_storage.testing import (
    AccountOpened,
    EventStoreContract,
    MoneyDeposited,
    TransactionalStoreContract,
    contract_registry,
)
from uno.events import (
    Event,
    EventRegistry,
    Lease,
    LeaseStore,
    NewEvent,
    RecordedEvent,
    StoreTransaction,
    TransactionalEventStore,
)

pytestmark = pytest.mark.anyio


class TestInMemoryEventStore(EventStoreContract, TransactionalStoreContract):
    @pytest.fixture
    async def store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
        async with open_event_store("memory://", registry=registry, max_event_size=4096) as store:
            assert isinstance(store, InMemoryEventStore)
            yield store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store() -> AsyncIterator[InMemoryEventStore]:
    async with InMemoryEventStore(contract_registry()) as store:
        yield store


class Rollback(Exception):
    pass


def deposits(count: int, start: int = 0) -> list[MoneyDeposited]:
    return [MoneyDeposited(amount=n) for n in range(start, start + count)]


async def amounts(store: InMemoryEventStore, stream_id: str) -> list[int]:
    return [e.data.amount for e in await store.read_stream(stream_id)]  # type: ignore[attr-defined]


# -- transactions -------------------------------------------------------------------


async def test_the_store_and_its_transaction_keep_the_protocols(
    store: InMemoryEventStore,
) -> None:
    transactional: TransactionalEventStore = store  # checked by mypy too
    assert isinstance(transactional, TransactionalEventStore)
    async with transactional.transaction() as tx:
        assert isinstance(tx, StoreTransaction)
    leases: LeaseStore = store.lease_store()
    assert isinstance(leases, LeaseStore)


async def test_positions_of_rolled_back_events_are_not_reused(store: InMemoryEventStore) -> None:
    with pytest.raises(Rollback):
        async with store.transaction() as tx:
            rolled_back = await tx.append("s", deposits(3))
            raise Rollback
    committed = await store.append("s", deposits(1))
    assert committed.stream_version == 1
    assert committed.global_position > rolled_back.global_position


async def test_the_store_refuses_writes_from_inside_its_transaction(
    store: InMemoryEventStore,
) -> None:
    async with store.transaction() as tx:
        with pytest.raises(StoreConfigurationError, match=r"tx\.append"):
            await store.append("s", deposits(1))
        with pytest.raises(StoreConfigurationError):
            await store.save_checkpoint("projector", 1)
        with pytest.raises(StoreConfigurationError):
            async with store.transaction():
                pass
        with pytest.raises(StoreConfigurationError, match="subscribe"):
            tx.subscribe()
        await tx.append("s", deposits(1))
    with pytest.raises(StoreConfigurationError, match="ended"):
        await tx.append("s", deposits(1))
    with pytest.raises(StoreConfigurationError, match="ended"):
        await tx.read_stream("s")
    assert await store.stream_version("s") == 1


async def test_writes_of_other_tasks_wait_for_the_transaction_in_order(
    store: InMemoryEventStore,
) -> None:
    done: list[str] = []

    async def append(name: str, amount: int) -> None:
        await store.append("s", [MoneyDeposited(amount=amount)])
        done.append(name)

    async def checkpoint() -> None:
        await store.save_checkpoint("projector", 7)
        done.append("checkpoint")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks, store.transaction() as tx:
            await tx.append("s", deposits(1))
            tasks.start_soon(append, "first", 10)
            await anyio.sleep(0.01)
            tasks.start_soon(checkpoint)
            tasks.start_soon(append, "second", 20)
            await anyio.sleep(0.05)
            assert done == []
            assert await tx.stream_version("s") == 1
            assert await tx.load_checkpoint("projector") is None
    assert done == ["first", "checkpoint", "second"]
    assert await amounts(store, "s") == [0, 10, 20]
    assert await store.load_checkpoint("projector") == 7


async def test_a_waiting_writer_sees_what_the_transaction_committed(
    store: InMemoryEventStore,
) -> None:
    failures: list[Exception] = []

    async def append_at_version_zero() -> None:
        try:
            await store.append("s", deposits(1, 5), expected_version=0)
        except Exception as error:
            failures.append(error)

    async with anyio.create_task_group() as tasks, store.transaction() as tx:
        tasks.start_soon(append_at_version_zero)
        await anyio.sleep(0.01)
        await tx.append("s", deposits(1), expected_version=0)
    assert [type(f).__name__ for f in failures] == ["WrongExpectedVersion"]
    assert await amounts(store, "s") == [0]


async def test_a_subscriber_hears_of_a_transaction_only_when_it_commits(
    store: InMemoryEventStore,
) -> None:
    seen: list[RecordedEvent[Event]] = []
    committed = anyio.Event()

    async def follow() -> None:
        async with store.subscribe() as events:
            async for event in events:
                seen.append(event)
                if len(seen) == 2:
                    committed.set()
                    return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow)
            async with store.transaction() as tx:
                await tx.append("s", deposits(2))
                await anyio.sleep(0.05)
                assert seen == []
            await committed.wait()
    assert [e.stream_version for e in seen] == [1, 2]


async def test_erasing_a_stream_in_a_rolled_back_transaction_restores_it(
    store: InMemoryEventStore,
) -> None:
    stored = NewEvent(data=MoneyDeposited(amount=1))
    first = await store.append("person-1", [stored])
    await store.append("other", deposits(1))
    await store.set_stream_metadata("person-1", {"pii": True})
    with pytest.raises(Rollback):
        async with store.transaction() as tx:
            added = NewEvent(data=MoneyDeposited(amount=2))
            await tx.append("person-1", [added])
            await tx.delete_stream("person-1", hard=True)
            with pytest.raises(StreamDeleted):
                await tx.read_stream("person-1")
            assert [e.stream_id async for e in tx.read_all()] == ["other"]
            assert await tx.count_events() == 1
            # Readers outside still see the stream and the whole log.
            assert await amounts(store, "person-1") == [1]
            assert [e.stream_id async for e in store.read_all()] == ["person-1", "other"]
            assert await store.get_stream_metadata("person-1") == {"pii": True}
            raise Rollback
    assert await amounts(store, "person-1") == [1]
    assert [e.stream_id async for e in store.read_all()] == ["person-1", "other"]
    assert await store.get_stream_metadata("person-1") == {"pii": True}
    assert await store.append("person-1", [stored]) == first  # still an idempotent retry
    retried = await store.append("elsewhere", [added])  # its id was never committed
    assert retried.stream_version == 1
    assert await store.count_events() == 3


async def test_erasing_a_stream_in_a_committed_transaction_erases_it(
    store: InMemoryEventStore,
) -> None:
    await store.append("person-1", deposits(2))
    await store.append("other", deposits(1))
    async with store.transaction() as tx:
        await tx.delete_stream("person-1", hard=True)
        await tx.append("other", deposits(1, 9))
        assert await store.count_events() == 3
    with pytest.raises(StreamDeleted):
        await store.read_stream("person-1")
    assert [e.stream_id async for e in store.read_all()] == ["other", "other"]
    assert await amounts(store, "other") == [0, 9]


async def test_a_soft_deletion_in_a_transaction_shows_only_after_commit(
    store: InMemoryEventStore,
) -> None:
    await store.append("s", deposits(1))
    async with store.transaction() as tx:
        await tx.delete_stream("s")
        assert await store.stream_version("s") == 1
        assert await tx.stream_version("s") is None
    with pytest.raises(StreamDeleted):
        await store.append("s", deposits(1))


async def test_the_store_works_after_many_rolled_back_transactions(
    store: InMemoryEventStore,
) -> None:
    for n in range(20):
        with pytest.raises(Rollback):
            async with store.transaction() as tx:
                await tx.append(f"s-{n % 3}", deposits(2))
                raise Rollback
        async with store.transaction() as tx:
            await tx.append(f"s-{n % 3}", [AccountOpened(owner=str(n))])
    positions = [e.global_position async for e in store.read_all()]
    assert len(positions) == 20
    assert positions == sorted(set(positions))
    assert await store.log_position() == positions[-1]


# -- leases -------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_released() -> None:
    leases = InMemoryLeaseStore()
    assert isinstance(leases, LeaseStore)
    lease = await leases.try_acquire("projection-1")
    assert lease is not None
    assert isinstance(lease, Lease)
    assert lease.name == "projection-1"
    assert await leases.try_acquire("projection-1") is None
    other = await leases.try_acquire("projection-2")
    assert other is not None
    assert leases.held() == ["projection-1", "projection-2"]
    assert await lease.check()
    await lease.release()
    await lease.release()
    assert not await lease.check()
    again = await leases.try_acquire("projection-1")
    assert again is not None
    await lease.release()  # the old holder's release does not free the new holder's lease
    assert await again.check()
    assert await leases.try_acquire("projection-1") is None


async def test_a_revoked_lease_stays_lost_and_frees_its_name() -> None:
    leases = InMemoryLeaseStore()
    lease = await leases.try_acquire("p")
    assert lease is not None
    leases.revoke("p")
    assert not await lease.check()
    successor = await leases.try_acquire("p")
    assert successor is not None
    assert not await lease.check()
    assert await successor.check()


async def test_a_store_has_one_lease_store(store: InMemoryEventStore) -> None:
    assert store.lease_store() is store.lease_store()
    lease = await store.lease_store().try_acquire("p")
    assert lease is not None
    assert await store.lease_store().try_acquire("p") is None
    other = InMemoryEventStore(contract_registry())
    assert await other.lease_store().try_acquire("p") is not None


# -- the base class's default lag primitives ---------------------------------------


async def test_the_default_lag_primitives_walk_the_log_like_the_backend_counts(
    store: InMemoryEventStore,
) -> None:
    """A backend that does not override _log_position/_count_events gets correct answers."""
    for n in range(25):
        stream = f"account-{n % 4}" if n % 5 else f"ledger-{n}"
        await store.append(stream, [AccountOpened(owner=str(n)), *deposits(99, n * 100)])
    await store.delete_stream("account-3", hard=True)  # gaps in the positions
    positions = [e.global_position async for e in store.read_all()]
    assert len(positions) > 1000  # more than one batch of the walk
    assert await EventStoreBase._log_position(store) == await store.log_position()
    assert await store.log_position() == positions[-1]
    cases: list[tuple[int, int | None, tuple[str, ...] | None, str | None]] = [
        (0, None, None, None),
        (positions[10], positions[1500], None, None),
        (0, positions[1200], ("uno_contract.AccountOpened",), None),
        (positions[5], None, None, "account-"),
        (positions[999], positions[1001], ("uno_contract.MoneyDeposited",), "ledger-"),
    ]
    for after, before, types, prefix in cases:
        walked = await EventStoreBase._count_events(store, after, before, types, prefix)
        assert walked == await store._count_events(after, before, types, prefix)
    assert await EventStoreBase._log_position(InMemoryEventStore(contract_registry())) == 0


async def test_read_all_and_subscriptions_decode_a_page_a_chunk_at_a_time(
    store: InMemoryEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = DECODE_CHUNK * 2 + 5
    await store.append("s", [NewEvent(data=MoneyDeposited(amount=n)) for n in range(count)])
    decoded: list[int] = []
    decode = store._decode

    def counting(rows: Sequence[Row], stream_id: str | None = None) -> list[RecordedEvent[Event]]:
        decoded.append(len(rows))
        return decode(rows, stream_id)

    monkeypatch.setattr(store, "_decode", counting)
    events = store.read_all(batch_size=count)  # one page of every event
    first = await anext(events)
    assert first.global_position == 1
    assert decoded == [DECODE_CHUNK]  # not the whole page
    rest = [event async for event in events]
    assert [e.global_position for e in rest] == list(range(2, count + 1))
    assert decoded == [DECODE_CHUNK, DECODE_CHUNK, 5]
    decoded.clear()
    async with store.subscribe(batch_size=count) as subscription:
        seen = []
        async for event in subscription:
            seen.append(event.global_position)
            if len(seen) == count:
                break
    assert seen == list(range(1, count + 1))
    assert decoded == [DECODE_CHUNK, DECODE_CHUNK, 5]
