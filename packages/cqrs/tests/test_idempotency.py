"""Idempotency keys on memory, SQLite and PostgreSQL: once per key, under concurrency too."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from uno.cqrs import (
    REPLAYED,
    BusBuilder,
    BusConfigurationError,
    Command,
    Err,
    IdempotencyBehaviour,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyStore,
    IdempotencyStoreUnavailable,
    InMemoryIdempotencyStore,
    MessageContext,
    Ok,
    Result,
    UnitOfWorkBehaviour,
    ValidationFailed,
    open_idempotency_store,
)
from uno.event_sourcing import (
    Aggregate,
    AggregateNotFound,
    Repository,
    UnitOfWork,
    applies,
    register_types,
)
from uno.event_storage import open_event_store
from uno.event_storage.testing import postgres_url
from uno.events import Event, EventRegistry

__all__ = ["postgres_url"]  # the fixture

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Transfer(Command):
    source: str
    target: str
    amount: int


class Receipt(BaseModel):
    transfer_id: str
    amount: int


@dataclass(frozen=True)
class User:
    id: str
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()


Opener = Callable[[], AbstractAsyncContextManager[IdempotencyStore]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Open stores of one backend on one database: separate connections, like processes."""
    if request.param == "memory":
        shared = InMemoryIdempotencyStore()

        @asynccontextmanager
        async def memory() -> AsyncIterator[IdempotencyStore]:
            yield shared

        yield memory
        return
    url: str = f"sqlite:///{tmp_path / 'keys.db'}"
    options: dict[str, Any] = {}
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        options = {"schema": schema, "pool_min_size": 0, "pool_max_size": 4}
    try:
        yield lambda: open_idempotency_store(url, **options)
    finally:
        if request.param == "postgres":
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Teller:
    """A transfer handler that counts its runs and can be made slow or failing."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.runs: list[Transfer] = []
        self.delay = delay
        self.fail_next = False

    async def __call__(self, command: Transfer) -> Receipt:
        self.runs.append(command)
        await anyio.sleep(self.delay)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the ledger is down")
        return Receipt(transfer_id=f"t-{len(self.runs)}", amount=command.amount)


def bus_of(store: IdempotencyStore, teller: Teller, **options: Any) -> Any:
    async def transfer(command: Transfer) -> Receipt:
        return await teller(command)

    builder = BusBuilder().use(IdempotencyBehaviour(store, **options), applies_to=Command)
    return builder.register(transfer).build().commands


def keyed(key: str, principal: User | None = None) -> MessageContext:
    return MessageContext(idempotency_key=key, principal=principal)


TRANSFER = Transfer(source="a", target="b", amount=10)


async def test_a_repeat_returns_the_first_result_typed_and_runs_nothing(
    open_store: Opener,
) -> None:
    teller = Teller()
    async with open_store() as store:
        commands = bus_of(store, teller)
        first = await commands.send(TRANSFER, context=keyed("k-1"))
        again_context = keyed("k-1")
        again = await commands.send(TRANSFER, context=again_context)
        assert first == again == Receipt(transfer_id="t-1", amount=10)
        assert isinstance(again, Receipt)  # decoded as the handler's return type
        assert again_context.items[REPLAYED] is True
        assert len(teller.runs) == 1
        # Another key, or no key at all, runs the command.
        assert (await commands.send(TRANSFER, context=keyed("k-2"))).transfer_id == "t-2"
        assert (await commands.send(TRANSFER)).transfer_id == "t-3"
        assert (await commands.send(TRANSFER)).transfer_id == "t-4"
        assert len(teller.runs) == 4


async def test_a_key_reused_for_another_message_is_refused(open_store: Opener) -> None:
    teller = Teller()
    async with open_store() as store:
        commands = bus_of(store, teller)
        await commands.send(TRANSFER, context=keyed("k-1"))
        other = Transfer(source="a", target="b", amount=11)
        with pytest.raises(IdempotencyKeyReused) as caught:
            await commands.send(other, context=keyed("k-1"))
        assert caught.value.code == "cqrs.idempotency_key_reused"
        assert caught.value.key == "k-1"
        assert "'k-1'" in str(caught.value)
        assert len(teller.runs) == 1


async def test_concurrent_sends_of_one_key_run_the_handler_once(open_store: Opener) -> None:
    """Eight sends at once, each on its own store (its own connection on SQL backends)."""
    teller = Teller(delay=0.2)
    results: list[Receipt] = []
    async with (
        open_store() as s1,
        open_store() as s2,
        open_store() as s3,
        open_store() as s4,
    ):
        buses = [bus_of(store, teller) for store in (s1, s2, s3, s4)]

        async def send(index: int) -> None:
            results.append(await buses[index % 4].send(TRANSFER, context=keyed("same")))

        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(send, index)
    assert len(teller.runs) == 1
    assert results == [Receipt(transfer_id="t-1", amount=10)] * 8


async def test_a_failure_frees_the_key_so_the_client_can_retry(open_store: Opener) -> None:
    teller = Teller()
    teller.fail_next = True
    async with open_store() as store:
        commands = bus_of(store, teller)
        with pytest.raises(RuntimeError, match="ledger is down"):
            await commands.send(TRANSFER, context=keyed("k-1"))
        receipt = await commands.send(TRANSFER, context=keyed("k-1"))
        assert receipt.transfer_id == "t-2"
        assert await commands.send(TRANSFER, context=keyed("k-1")) == receipt
        assert len(teller.runs) == 2


async def test_a_cancelled_send_frees_the_key(open_store: Opener) -> None:
    teller = Teller(delay=5)
    async with open_store() as store:
        commands = bus_of(store, teller)
        with anyio.move_on_after(0.2):
            await commands.send(TRANSFER, context=keyed("k-1"))
        teller.delay = 0
        assert (await commands.send(TRANSFER, context=keyed("k-1"))).transfer_id == "t-2"


async def test_results_are_forgotten_after_the_retention(open_store: Opener) -> None:
    teller = Teller()
    async with open_store() as store:
        commands = bus_of(store, teller, retention=0.3)
        await commands.send(TRANSFER, context=keyed("k-1"))
        await commands.send(TRANSFER, context=keyed("k-1"))
        assert len(teller.runs) == 1
        await anyio.sleep(0.5)
        assert (await commands.send(TRANSFER, context=keyed("k-1"))).transfer_id == "t-2"
        assert await store.purge() == 0  # the expired row was taken over, not left behind


async def test_a_claim_whose_process_died_is_taken_over_after_its_lease(
    open_store: Opener,
) -> None:
    teller = Teller()
    async with open_store() as store:
        commands = bus_of(store, teller, lease=0.3, wait=2)
        # A send that claimed the key and died: the claim is there, nobody renews it.
        dead = await store.claim("k-1", "another fingerprint", "dead-token", 0.3)
        assert dead.status == "claimed"
        with pytest.raises(IdempotencyKeyReused):  # while it lives, it holds the key
            await commands.send(TRANSFER, context=keyed("k-1"))
        await anyio.sleep(0.4)
        assert (await commands.send(TRANSFER, context=keyed("k-1"))).transfer_id == "t-1"
        assert not await store.complete("k-1", "dead-token", b"null", 60)  # it lost the key


async def test_a_long_handler_keeps_its_claim_by_renewing_the_lease(open_store: Opener) -> None:
    teller = Teller(delay=1.0)
    results: list[Receipt] = []
    async with open_store() as store:
        commands = bus_of(store, teller, lease=0.3, wait=3)

        async def send() -> None:
            results.append(await commands.send(TRANSFER, context=keyed("slow")))

        async with anyio.create_task_group() as group:
            group.start_soon(send)
            await anyio.sleep(0.6)  # two leases later, the first send still holds the key
            group.start_soon(send)
    assert len(teller.runs) == 1
    assert results == [Receipt(transfer_id="t-1", amount=10)] * 2


async def test_a_repeat_waits_at_most_its_bound_for_a_first_send_still_running(
    open_store: Opener,
) -> None:
    teller = Teller(delay=0.8)
    async with open_store() as store:
        commands = bus_of(store, teller, wait=0.1)
        caught: list[BaseException] = []

        async def repeat() -> None:
            await anyio.sleep(0.1)
            try:
                await commands.send(TRANSFER, context=keyed("k-1"))
            except IdempotencyKeyInProgress as exc:
                caught.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(commands.send, TRANSFER, context=keyed("k-1")))
            group.start_soon(repeat)
        assert [getattr(e, "code", None) for e in caught] == ["cqrs.idempotency_key_in_progress"]
        assert len(teller.runs) == 1


async def test_keys_of_different_principals_never_meet(open_store: Opener) -> None:
    teller = Teller()
    async with open_store() as store:
        commands = bus_of(store, teller)
        ann, bob = User("ann"), User("bob")
        first = await commands.send(TRANSFER, context=keyed("k-1", ann))
        second = await commands.send(TRANSFER, context=keyed("k-1", bob))
        assert (first.transfer_id, second.transfer_id) == ("t-1", "t-2")
        assert await commands.send(TRANSFER, context=keyed("k-1", ann)) == first


async def test_keys_are_stored_literally(open_store: Opener) -> None:
    teller = Teller()
    hostile = "'; DROP TABLE uno_idempotency_keys; --\x00é" + "x" * 200
    async with open_store() as store:
        commands = bus_of(store, teller)
        if store.backend == "postgresql":  # PostgreSQL text cannot hold NUL
            hostile = hostile.replace("\x00", "")
        first = await commands.send(TRANSFER, context=keyed(hostile))
        assert await commands.send(TRANSFER, context=keyed(hostile)) == first
        assert (await commands.send(TRANSFER, context=keyed(hostile[:-1]))) != first
        assert len(teller.runs) == 2


async def test_an_empty_or_oversized_key_is_a_validation_error() -> None:
    commands = bus_of(InMemoryIdempotencyStore(), Teller())
    for key in ("", "k" * 256):
        with pytest.raises(ValidationFailed) as caught:
            await commands.send(TRANSFER, context=keyed(key))
        assert [e.location for e in caught.value.errors] == ["idempotency_key"]


async def test_result_returning_handlers_keep_the_ok_value_and_never_an_err() -> None:
    runs: list[int] = []

    async def transfer(command: Transfer) -> Result[int, ValueError]:
        runs.append(command.amount)
        if len(runs) == 1:
            return Err(ValueError("insufficient funds"))
        return Ok(command.amount * 2)

    commands = (
        BusBuilder()
        .use(IdempotencyBehaviour(InMemoryIdempotencyStore()))
        .register(transfer)
        .build()
        .commands
    )
    assert isinstance((await commands.send(TRANSFER, context=keyed("k"), as_result=True)), Err)
    assert await commands.send(TRANSFER, context=keyed("k"), as_result=True) == Ok(20)
    assert await commands.send(TRANSFER, context=keyed("k")) == 20
    assert runs == [10, 10]


class Opaque:
    """A class pydantic has no schema for."""


def test_a_result_that_cannot_be_kept_is_refused_at_build() -> None:
    async def transfer(command: Transfer) -> Opaque:
        return Opaque()

    builder = BusBuilder().use(IdempotencyBehaviour(InMemoryIdempotencyStore()))
    with pytest.raises(BusConfigurationError, match="cannot keep"):
        builder.register(transfer).build()


def test_bad_settings_and_urls_are_refused() -> None:
    with pytest.raises(BusConfigurationError, match="retention"):
        IdempotencyBehaviour(InMemoryIdempotencyStore(), retention=0)


async def test_unknown_urls_and_unreachable_databases_are_typed_errors() -> None:
    with pytest.raises(BusConfigurationError, match="not an idempotency store URL"):
        async with open_idempotency_store("mongodb://x"):
            pass
    with pytest.raises(BusConfigurationError, match="sqlite:///"):
        async with open_idempotency_store("sqlite://"):
            pass
    with pytest.raises(IdempotencyStoreUnavailable) as caught:
        async with open_idempotency_store(
            "postgresql://postgres@127.0.0.1:1/test", connect_timeout=1
        ):
            pass
    assert caught.value.code == "cqrs.idempotency_store_unavailable"


async def test_an_unreadable_sqlite_file_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "keys.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IdempotencyStoreUnavailable, match="sqlite"):
        async with open_idempotency_store(f"sqlite:///{tmp_path / 'keys.db'}"):
            pass


# -- with a real unit of work: a repeated deposit is stored once ---------------


class Deposited(Event):
    event_type = "cqrs_idempotency_test.Deposited"
    amount: int


class Account(Aggregate):
    category = "account"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance = 0

    @applies
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


class Deposit(Command):
    account_id: str
    amount: int


async def test_a_repeated_command_stores_its_events_once(tmp_path: Path) -> None:
    registry = register_types(EventRegistry())
    registry.register(Deposited)
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    async with (
        open_event_store(url, registry=registry, auto_migrate=True) as store,
        open_idempotency_store(url) as keys,
    ):
        accounts = Repository(store, Account)

        async def deposit(command: Deposit, context: MessageContext) -> int:
            uow: UnitOfWork = context.unit_of_work
            try:
                account = await uow.get(accounts, command.account_id)
            except AggregateNotFound:
                account = Account(command.account_id)
                uow.add(account, repository=accounts)
            account.record(Deposited(amount=command.amount))
            if command.amount < 0:
                raise ValueError("a deposit is positive")
            return account.balance

        commands = (
            BusBuilder()
            .use(IdempotencyBehaviour(keys), applies_to=Command)
            .use(UnitOfWorkBehaviour(lambda ctx: UnitOfWork(store)), applies_to=Command)
            .register(deposit)
            .build()
            .commands
        )
        with pytest.raises(ValueError, match="positive"):
            await commands.send(Deposit(account_id="a", amount=-1), context=keyed("bad"))
        for _ in range(3):
            assert await commands.send(Deposit(account_id="a", amount=5), context=keyed("d1")) == 5
        assert await commands.send(Deposit(account_id="a", amount=5), context=keyed("d2")) == 10
        stored = [e.data for e in await store.read_stream("account-a")]
        assert [d.amount for d in stored if isinstance(d, Deposited)] == [5, 5]


# -- an invariant over any sequence of sends -----------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 3)), max_size=25))
def test_each_key_runs_once_with_its_first_message(sends: list[tuple[str, int]]) -> None:
    async def scenario() -> None:
        teller = Teller()
        commands = bus_of(InMemoryIdempotencyStore(), teller)
        first: dict[str, tuple[int, Receipt]] = {}
        for key, amount in sends:
            command = Transfer(source="a", target="b", amount=amount)
            if key in first and first[key][0] != amount:
                with pytest.raises(IdempotencyKeyReused):
                    await commands.send(command, context=keyed(key))
                continue
            receipt = await commands.send(command, context=keyed(key))
            if key in first:
                assert receipt == first[key][1]
            else:
                first[key] = (amount, receipt)
        assert len(teller.runs) == len(first)

    anyio.run(scenario)
