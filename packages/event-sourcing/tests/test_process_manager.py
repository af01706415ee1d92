"""Process managers: a money transfer with a debit, a credit, and a compensating refund."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import anyio
import anyio.abc
import pytest

from uno.event_sourcing import (
    Aggregate,
    CatchUpTimeout,
    DeadlineReached,
    ProcessEnded,
    ProcessManager,
    ProcessManagerFailed,
    ProcessManagerRunner,
    Repository,
    applies,
    handles,
    on_deadline,
    register_types,
    starts,
)
from uno.event_sourcing.exceptions import HandlerDefinitionError
from uno.event_storage import (
    ClosableEventStore,
    EventStoreBase,
    InMemoryEventStore,
    InMemoryLeaseStore,
    open_event_store,
)
from uno.events import (
    COMMAND_ID_HEADER,
    CommandSender,
    Event,
    EventMetadata,
    EventRegistry,
    EventStore,
    JsonSerializer,
    ManualClock,
    RecordedEvent,
)

pytestmark = pytest.mark.anyio

START = datetime(2030, 1, 1, tzinfo=UTC)
TIMEOUT = timedelta(seconds=30)
WORKER = Path(__file__).with_name("process_worker.py")


# -- the bank: accounts, and the commands that change them ----------------------


class AccountOpened(Event):
    event_type = "bank.AccountOpened"
    balance: int


class AccountClosed(Event):
    event_type = "bank.AccountClosed"


class AccountDebited(Event):
    event_type = "bank.AccountDebited"
    transfer_id: str
    amount: int
    command_id: str


class AccountCredited(Event):
    event_type = "bank.AccountCredited"
    transfer_id: str
    amount: int
    command_id: str


class CreditFailed(Event):
    event_type = "bank.CreditFailed"
    transfer_id: str
    reason: str
    command_id: str


class AccountRefunded(Event):
    event_type = "bank.AccountRefunded"
    transfer_id: str
    amount: int
    command_id: str


class Account(Aggregate):
    category = "account"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance = 0
        self.closed = False
        self.commands: set[str] = set()

    def open(self, balance: int) -> None:
        self.record(AccountOpened(balance=balance))

    def close(self) -> None:
        self.record(AccountClosed())

    def debit(self, transfer_id: str, amount: int, command_id: str) -> None:
        if command_id not in self.commands:
            self.record(
                AccountDebited(transfer_id=transfer_id, amount=amount, command_id=command_id)
            )

    def credit(self, transfer_id: str, amount: int, command_id: str) -> None:
        if command_id in self.commands:
            return
        if self.closed:
            self.record(
                CreditFailed(
                    transfer_id=transfer_id, reason="account closed", command_id=command_id
                )
            )
        else:
            self.record(
                AccountCredited(transfer_id=transfer_id, amount=amount, command_id=command_id)
            )

    def refund(self, transfer_id: str, amount: int, command_id: str) -> None:
        if command_id not in self.commands:
            self.record(
                AccountRefunded(transfer_id=transfer_id, amount=amount, command_id=command_id)
            )

    @applies
    def _opened(self, event: AccountOpened) -> None:
        self.balance = event.balance

    @applies
    def _closed(self, event: AccountClosed) -> None:
        self.closed = True

    @applies
    def _debited(self, event: AccountDebited) -> None:
        self.balance -= event.amount
        self.commands.add(event.command_id)

    @applies
    def _credited(self, event: AccountCredited) -> None:
        self.balance += event.amount
        self.commands.add(event.command_id)

    @applies
    def _credit_failed(self, event: CreditFailed) -> None:
        self.commands.add(event.command_id)

    @applies
    def _refunded(self, event: AccountRefunded) -> None:
        self.balance += event.amount
        self.commands.add(event.command_id)


@dataclass(frozen=True)
class Debit:
    account_id: str
    transfer_id: str
    amount: int


@dataclass(frozen=True)
class Credit:
    account_id: str
    transfer_id: str
    amount: int


@dataclass(frozen=True)
class Refund:
    account_id: str
    transfer_id: str
    amount: int


@dataclass
class Bank:
    """A real command sender: loads the account, applies the command, saves it.

    Accounts deduplicate by the command id, so a command sent twice moves money once.
    """

    accounts: Repository[Account]
    unanswered_credits: set[str] = field(default_factory=set)
    sent: list[tuple[object, str]] = field(default_factory=list)
    fail_next: int = 0

    async def send(self, command: object, /, *, metadata: EventMetadata | None = None) -> object:
        assert metadata is not None
        command_id = metadata.headers[COMMAND_ID_HEADER]
        self.sent.append((command, command_id))
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("the bank is unreachable")
        assert isinstance(command, Debit | Credit | Refund)
        if isinstance(command, Credit) and command.account_id in self.unanswered_credits:
            return None  # the credit handler never answers
        account = await self.accounts.get(command.account_id)
        if isinstance(command, Debit):
            account.debit(command.transfer_id, command.amount, command_id)
        elif isinstance(command, Credit):
            account.credit(command.transfer_id, command.amount, command_id)
        else:
            account.refund(command.transfer_id, command.amount, command_id)
        await self.accounts.save(account, metadata=metadata)
        return None


# -- the process ---------------------------------------------------------------


class TransferRequested(Event):
    event_type = "bank.TransferRequested"
    transfer_id: str
    source: str
    target: str
    amount: int


class TransferStarted(Event):
    event_type = "bank.TransferStarted"
    source: str
    target: str
    amount: int


class TransferDebited(Event):
    event_type = "bank.TransferDebited"


class TransferProcess(ProcessManager):
    category = "transfer"
    correlation_key = "transfer_id"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.source = self.target = ""
        self.amount = 0
        self.debited = False

    @starts
    @handles
    def requested(self, event: RecordedEvent[TransferRequested]) -> None:
        data = event.data
        self.record(TransferStarted(source=data.source, target=data.target, amount=data.amount))
        self.send(Debit(account_id=data.source, transfer_id=self.id, amount=data.amount))

    @handles
    def on_debited(self, event: RecordedEvent[AccountDebited]) -> None:
        self.record(TransferDebited())
        self.send(Credit(account_id=self.target, transfer_id=self.id, amount=self.amount))
        self.schedule("credit-timeout", after=TIMEOUT, payload={"target": self.target})

    @handles
    def on_credited(self, event: RecordedEvent[AccountCredited]) -> None:
        self.complete()

    @handles
    def on_credit_failed(self, event: RecordedEvent[CreditFailed]) -> None:
        self.compensate()

    @on_deadline("credit-timeout")
    def credit_timed_out(self, deadline: DeadlineReached) -> None:
        assert deadline.payload == {"target": self.target}
        self.compensate()

    def compensate(self) -> None:
        self.send(Refund(account_id=self.source, transfer_id=self.id, amount=self.amount))
        self.complete("compensated")

    @applies
    def _started(self, event: TransferStarted) -> None:
        self.source, self.target, self.amount = event.source, event.target, event.amount

    @applies
    def _debited(self, event: TransferDebited) -> None:
        self.debited = True


def bank_registry() -> EventRegistry:
    registry = register_types(EventRegistry())
    registry.register(
        AccountOpened,
        AccountClosed,
        AccountDebited,
        AccountCredited,
        CreditFailed,
        AccountRefunded,
        TransferRequested,
        TransferStarted,
        TransferDebited,
    )
    return registry


# -- stores --------------------------------------------------------------------

StoreFactory = Callable[[], AbstractAsyncContextManager[ClosableEventStore]]


StoreSpec = tuple[str, dict[str, object]]


def _spec(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    if kind == "memory":
        return "memory://", {"poll_interval": 0.02}
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}", {"auto_migrate": True, "poll_interval": 0.02}
    schema = request.getfixturevalue("pg_schema")
    return request.getfixturevalue("postgres_url"), {"auto_migrate": True, "schema": schema}


@asynccontextmanager
async def _stores(spec: StoreSpec) -> AsyncIterator[StoreFactory]:
    """Yield what opens the same store again for each 'restart' (memory just stays open)."""
    url, options = spec
    registry = bank_registry()
    if url != "memory://":

        def reopen() -> AbstractAsyncContextManager[ClosableEventStore]:
            return open_event_store(url, registry=registry, **options)

        yield reopen
        return
    async with open_event_store(url, registry=registry, **options) as memory:

        @asynccontextmanager
        async def same() -> AsyncIterator[ClosableEventStore]:
            yield memory

        yield same


@pytest.fixture(params=["memory", "sqlite"])
def bank_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    return _spec(request.param, request, tmp_path)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def restartable_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    return _spec(request.param, request, tmp_path)


@pytest.fixture
async def bank_store(bank_spec: StoreSpec) -> AsyncIterator[StoreFactory]:
    """Memory and SQLite stores with the bank's events."""
    async with _stores(bank_spec) as factory:
        yield factory


@pytest.fixture
async def restartable_store(restartable_spec: StoreSpec) -> AsyncIterator[StoreFactory]:
    """Stores of every backend with the bank's events, for the restart tests."""
    async with _stores(restartable_spec) as factory:
        yield factory


async def open_accounts(store: ClosableEventStore, **balances: int) -> Repository[Account]:
    accounts = Repository(store, Account)
    for account_id, balance in balances.items():
        account = Account(account_id)
        account.open(balance)
        await accounts.save(account)
    return accounts


COMPLETED_TRANSFER = [
    "bank.TransferStarted",
    "uno.ProcessEventHandled",
    "uno.ProcessCommandsSent",
    "bank.TransferDebited",
    "uno.DeadlineScheduled",
    "uno.ProcessEventHandled",
    "uno.ProcessCommandsSent",
    "uno.DeadlineCancelled",
    "uno.ProcessCompleted",
    "uno.ProcessEventHandled",
]
"""The event types in the stream of a transfer that debited, credited and completed."""


async def request_transfer(
    store: ClosableEventStore, transfer_id: str, source: str, target: str, amount: int
) -> None:
    await store.append(
        f"transferrequest-{transfer_id}",
        [TransferRequested(transfer_id=transfer_id, source=source, target=target, amount=amount)],
    )


async def settle(runner: ProcessManagerRunner, store: ClosableEventStore) -> None:
    """Wait until the runner handled everything, the events its own commands caused included.

    The log must stay quiet for two looks in a row: PostgreSQL's log position
    may lag an instant behind a commit while another transaction is open.
    """
    quiet = 0
    while quiet < 2:
        before = await store.log_position()
        await runner.wait_until_caught_up(timeout=10)
        await anyio.sleep(0.02)
        after = await store.log_position()
        quiet = quiet + 1 if after == before == runner.position else 0


async def stopped(runner: ProcessManagerRunner) -> Exception:
    """Wait until the runner stops on an error, and return it."""
    with anyio.fail_after(10):
        while runner.error is None:  # noqa: ASYNC110 - the runner offers no event to wait on
            await anyio.sleep(0.01)
    return runner.error


async def balances(accounts: Repository[Account], *ids: str) -> list[int]:
    return [(await accounts.get(account_id)).balance for account_id in ids]


async def types_in(store: ClosableEventStore, stream_id: str) -> list[str]:
    return [e.event_type for e in await store.read_stream(stream_id)]


def active(runner: ProcessManagerRunner) -> bool:
    """Return ``runner.active`` (through a call, which mypy does not narrow across awaits)."""
    return runner.active


async def until_active(runner: ProcessManagerRunner, *, is_active: bool = True) -> None:
    """Wait until the runner is active (holds its lease), or standing by."""
    with anyio.fail_after(10):
        while active(runner) != is_active:  # noqa: ASYNC110 - the runner offers no event to wait on
            await anyio.sleep(0.01)


def sent(bank: Bank) -> list[tuple[str, str]]:
    """The commands a bank was sent, as (command, transfer id)."""
    return [(type(c).__name__, getattr(c, "transfer_id", "")) for c, _ in bank.sent]


# -- tests ---------------------------------------------------------------------


def test_the_bank_is_a_command_sender() -> None:
    assert issubclass(Bank, CommandSender)


async def test_a_transfer_debits_the_source_credits_the_target_and_completes(
    bank_store: StoreFactory,
) -> None:
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100, b=5)
        bank = Bank(accounts)
        clock = ManualClock(START)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=clock
        ) as runner:
            await request_transfer(store, "t1", "a", "b", 30)
            await settle(runner, store)

        assert await balances(accounts, "a", "b") == [70, 35]
        transfer = await Repository(store, TransferProcess).get("t1")
        assert (transfer.status, transfer.outcome) == ("completed", "completed")
        assert transfer.pending_deadlines == {}
        assert [type(c).__name__ for c, _ in bank.sent] == ["Debit", "Credit"]
        assert await types_in(store, "transfer-t1") == COMPLETED_TRANSFER
        # Each command's events carry its id, its correlation and its cause.
        debited = (await store.read_stream("account-a"))[-1]
        requested = (await store.read_stream("transferrequest-t1"))[0]
        assert debited.metadata.correlation_id == str(requested.event_id)
        assert debited.metadata.causation_id == str(requested.event_id)
        assert debited.metadata.headers[COMMAND_ID_HEADER] == bank.sent[0][1]


class AuditNoted(Event):
    """A type only another service registers: the runner's store cannot decode it."""

    event_type = "audit.Noted"
    note: str


async def test_the_runner_reads_only_the_types_its_managers_react_to(
    bank_store: StoreFactory,
) -> None:
    """An event this process cannot decode neither stops the runner nor holds its position."""
    async with bank_store() as store:
        assert isinstance(store, EventStoreBase)
        writer = EventRegistry()
        writer.register(AuditNoted)
        own, store.serializer = store.serializer, JsonSerializer(writer)
        try:
            await store.append("audit-1", [AuditNoted(note="before")])
        finally:
            store.serializer = own
        accounts = await open_accounts(store, a=100, b=5)
        bank = Bank(accounts)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            assert "audit.Noted" not in runner.event_types
            assert "bank.TransferRequested" in runner.event_types
            await request_transfer(store, "t9", "a", "b", 30)
            await settle(runner, store)
            store.serializer = JsonSerializer(writer)
            try:
                last = await store.append("audit-1", [AuditNoted(note="after")])
            finally:
                store.serializer = own
            # The last event of the log is one no manager reacts to: caught up all the same.
            await runner.wait_until_caught_up(timeout=10)
            assert runner.position >= last.global_position
        assert await balances(accounts, "a", "b") == [70, 35]
        assert [type(c).__name__ for c, _ in bank.sent] == ["Debit", "Credit"]


async def test_a_failed_credit_refunds_the_source(bank_store: StoreFactory) -> None:
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100, b=0)
        target = await accounts.get("b")
        target.close()
        await accounts.save(target)
        bank = Bank(accounts)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await request_transfer(store, "t2", "a", "b", 40)
            await settle(runner, store)

        assert await balances(accounts, "a", "b") == [100, 0]
        assert await types_in(store, "account-a") == [
            "bank.AccountOpened",
            "bank.AccountDebited",
            "bank.AccountRefunded",
        ]
        assert "bank.CreditFailed" in await types_in(store, "account-b")
        transfer = await Repository(store, TransferProcess).get("t2")
        assert (transfer.status, transfer.outcome) == ("completed", "compensated")
        assert transfer.pending_deadlines == {}
        assert [type(c).__name__ for c, _ in bank.sent] == ["Debit", "Credit", "Refund"]


async def test_a_credit_timeout_fires_once_after_a_restart_and_refunds(
    restartable_store: StoreFactory,
) -> None:
    clock = ManualClock(START)
    async with restartable_store() as store:
        accounts = await open_accounts(store, a=100, b=0)
        bank = Bank(accounts, unanswered_credits={"b"})
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=clock
        ) as runner:
            await request_transfer(store, "t3", "a", "b", 25)
            await settle(runner, store)
            assert await runner.fire_due() == 0  # not due yet
        transfer = await Repository(store, TransferProcess).get("t3")
        assert transfer.pending_deadlines == {"credit-timeout": START + TIMEOUT}
        assert await balances(accounts, "a") == [75]

    clock.advance(TIMEOUT + timedelta(seconds=1))
    for _ in range(2):  # two restarts: the deadline fires at the first only
        async with restartable_store() as store:
            accounts = Repository(store, Account)
            bank = Bank(accounts)
            async with ProcessManagerRunner(
                store, [TransferProcess], sender=bank, clock=clock
            ) as runner:
                await runner.fire_due()
                await settle(runner, store)
            assert await balances(accounts, "a", "b") == [100, 0]

    async with restartable_store() as store:
        reached = [
            e
            for e in await store.read_stream("transfer-t3")
            if e.event_type == "uno.DeadlineReached"
        ]
        assert len(reached) == 1
        assert await types_in(store, "account-a") == [
            "bank.AccountOpened",
            "bank.AccountDebited",
            "bank.AccountRefunded",
        ]
        transfer = await Repository(store, TransferProcess).get("t3")
        assert (transfer.status, transfer.outcome) == ("completed", "compensated")


async def test_a_cancelled_deadline_does_not_fire(bank_store: StoreFactory) -> None:
    clock = ManualClock(START)
    async with bank_store() as store:
        accounts = await open_accounts(store, a=10, b=0)
        bank = Bank(accounts)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=clock
        ) as runner:
            await request_transfer(store, "t4", "a", "b", 10)
            await settle(runner, store)
            clock.advance(TIMEOUT * 2)
            assert await runner.fire_due() == 0
            await runner.wait_until_caught_up()
        assert await balances(accounts, "a", "b") == [0, 10]
        assert "uno.DeadlineReached" not in await types_in(store, "transfer-t4")


async def test_redelivering_handled_events_sends_no_command_again(
    bank_store: StoreFactory,
) -> None:
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100, b=0)
        bank = Bank(accounts)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await request_transfer(store, "t5", "a", "b", 10)
            await settle(runner, store)
        before = await types_in(store, "transfer-t5")
        assert len(bank.sent) == 2

        # The checkpoint is lost: every event is delivered again.
        await store.save_checkpoint("process-managers", 0)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await runner.wait_until_caught_up()
        assert len(bank.sent) == 2
        assert await types_in(store, "transfer-t5") == before
        assert await balances(accounts, "a", "b") == [90, 10]


async def test_commands_not_sent_before_a_crash_are_resent_with_the_same_id(
    restartable_store: StoreFactory,
) -> None:
    """The process was saved but its debit never left: the restarted runner sends it, once."""
    async with restartable_store() as store:
        accounts = await open_accounts(store, a=100, b=0)
        bank = Bank(accounts, fail_next=1)
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await request_transfer(store, "t6", "a", "b", 10)
            error = await stopped(runner)
            assert isinstance(error, ProcessManagerFailed)
            assert isinstance(error.__cause__, ConnectionError)
            assert error.code == "event_sourcing.process_manager_failed"
            with pytest.raises(ProcessManagerFailed):
                await runner.wait_until_caught_up()
        transfer = await Repository(store, TransferProcess).get("t6")
        assert transfer.version > 0  # saved before the send failed

        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await settle(runner, store)
        first_debit, resent_debit = bank.sent[0], bank.sent[1]
        assert first_debit == resent_debit  # same command, same id
        assert [type(c).__name__ for c, _ in bank.sent] == ["Debit", "Debit", "Credit"]
        assert await balances(accounts, "a", "b") == [90, 10]
        assert await types_in(store, "transfer-t6") == COMPLETED_TRANSFER


async def test_a_command_sent_twice_moves_money_once(bank_store: StoreFactory) -> None:
    """Receivers deduplicate by the command id that travels in the metadata."""
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100)
        bank = Bank(accounts)
        metadata = EventMetadata(headers={COMMAND_ID_HEADER: "c-1"})
        await bank.send(Debit(account_id="a", transfer_id="t", amount=10), metadata=metadata)
        await bank.send(Debit(account_id="a", transfer_id="t", amount=10), metadata=metadata)
        assert await balances(accounts, "a") == [90]


async def test_events_of_unknown_processes_are_ignored_unless_they_start_one(
    bank_store: StoreFactory,
) -> None:
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100)
        bank = Bank(accounts)
        stray = AccountDebited(transfer_id="nobody", amount=1, command_id="x")
        await store.append("account-z", [stray])
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await runner.wait_until_caught_up()
        assert bank.sent == []
        assert await store.stream_version("transfer-nobody") is None


async def test_a_stream_that_only_shares_the_managers_prefix_is_routed_like_any_other(
    bank_store: StoreFactory,
) -> None:
    """Only the manager's own events and deadlines in 'transfer-...' streams are its own."""
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100, b=0)
        bank = Bank(accounts)
        request = TransferRequested(transfer_id="t9", source="a", target="b", amount=7)
        await store.append("transfer-requests-9", [request])
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            await settle(runner, store)
        assert await balances(accounts, "a", "b") == [93, 7]
        assert (await Repository(store, TransferProcess).get("t9")).outcome == "completed"


async def test_an_ended_process_records_nothing_more() -> None:
    process = TransferProcess("t")
    process.complete()
    with pytest.raises(ProcessEnded) as ended:
        process.record(TransferDebited())
    assert ended.value.code == "event_sourcing.process_ended"
    with pytest.raises(ProcessEnded):
        process.schedule("x", after=TIMEOUT)


def test_schedule_takes_exactly_one_of_at_and_after() -> None:
    process = TransferProcess("t")
    with pytest.raises(ValueError, match="exactly one"):
        process.schedule("x")
    with pytest.raises(ValueError, match="exactly one"):
        process.schedule("x", at=START, after=TIMEOUT)
    with pytest.raises(ValueError, match="naive"):
        process.schedule("x", at=datetime(2030, 1, 1))


async def test_a_runner_refuses_a_manager_without_correlation() -> None:
    class Orphan(ProcessManager):
        @handles
        def on_requested(self, event: RecordedEvent[TransferRequested]) -> None:
            pass

    async with open_event_store("memory://", registry=bank_registry()) as store:
        bank = Bank(Repository(store, Account))
        with pytest.raises(HandlerDefinitionError, match="correlation_key"):
            ProcessManagerRunner(store, [Orphan], sender=bank)
        with pytest.raises(HandlerDefinitionError, match="share the category"):
            ProcessManagerRunner(store, [TransferProcess, TransferProcess], sender=bank)


def test_two_on_deadline_methods_for_one_name_are_refused() -> None:
    with pytest.raises(HandlerDefinitionError, match="two @on_deadline"):

        class Twice(ProcessManager):
            @on_deadline("x")
            def first(self, deadline: DeadlineReached) -> None:
                pass

            @on_deadline("x")
            def second(self, deadline: DeadlineReached) -> None:
                pass


# -- several runners of one name: one active, the others standing by ----------


async def test_two_runners_of_one_name_take_turns_and_send_each_command_once(
    bank_store: StoreFactory,
) -> None:
    """The second runner stands by, then takes over when the first ends; a deadline fires once."""
    clock = ManualClock(START)
    async with bank_store() as store, bank_store() as other:
        accounts = await open_accounts(store, a=100, b=0)
        first_bank = Bank(accounts, unanswered_credits={"b"})
        second_bank = Bank(Repository(other, Account))
        first = ProcessManagerRunner(
            store, [TransferProcess], sender=first_bank, clock=clock, lease_interval=0.05
        )
        second = ProcessManagerRunner(
            other, [TransferProcess], sender=second_bank, clock=clock, lease_interval=0.05
        )
        first_ended = anyio.Event()
        stop_first = anyio.Event()

        async def run_first(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            try:
                async with first:
                    task_status.started()
                    await stop_first.wait()
            finally:
                first_ended.set()

        async with anyio.create_task_group() as group:
            await group.start(run_first)
            async with second:
                assert active(first)
                assert not active(second)
                await request_transfer(store, "t1", "a", "b", 10)
                await settle(first, store)
                with pytest.raises(CatchUpTimeout, match="standing by"):
                    await second.wait_until_caught_up(timeout=0.2)
                clock.advance(TIMEOUT + timedelta(seconds=1))
                assert await second.fire_due() == 0  # only the active runner fires
                assert not active(second)
                assert second_bank.sent == []

                stop_first.set()
                await first_ended.wait()
                assert not active(first)
                await until_active(second)
                await second.fire_due()  # it may have fired already on taking over
                await settle(second, store)

        assert sent(first_bank) == [("Debit", "t1"), ("Credit", "t1")]
        assert sent(second_bank) == [("Refund", "t1")]
        assert (await types_in(store, "transfer-t1")).count("uno.DeadlineReached") == 1
        assert await balances(accounts, "a", "b") == [100, 0]
        transfer = await Repository(store, TransferProcess).get("t1")
        assert transfer.outcome == "compensated"


async def test_a_runner_that_loses_its_lease_stops_at_once_and_resumes_when_it_takes_it_again(
    bank_store: StoreFactory,
) -> None:
    async with bank_store() as store:
        accounts = await open_accounts(store, a=100, b=0)
        bank = Bank(accounts)
        leases = InMemoryLeaseStore()
        async with ProcessManagerRunner(
            store,
            [TransferProcess],
            sender=bank,
            clock=ManualClock(START),
            leases=leases,
            lease_interval=0.05,
        ) as runner:
            assert active(runner)
            assert leases.held() == [runner.lease_name] == ["process-managers:process-managers"]
            await request_transfer(store, "t1", "a", "b", 10)
            await settle(runner, store)
            checkpoint = await store.load_checkpoint(runner.name)

            leases.revoke(runner.lease_name)  # as if its connection died...
            thief = await leases.try_acquire(runner.lease_name)  # ...and another runner took it
            assert thief is not None
            await until_active(runner, is_active=False)
            await request_transfer(store, "t2", "a", "b", 20)
            await anyio.sleep(0.3)
            assert sent(bank) == [("Debit", "t1"), ("Credit", "t1")]
            assert await store.stream_version("transfer-t2") is None
            assert await store.load_checkpoint(runner.name) == checkpoint

            await thief.release()
            await settle(runner, store)  # waits until it holds the lease again
            assert active(runner)
        assert leases.held() == []
        assert sent(bank) == [
            ("Debit", "t1"),
            ("Credit", "t1"),
            ("Debit", "t2"),
            ("Credit", "t2"),
        ]
        assert await balances(accounts, "a", "b") == [70, 30]


class _StoreWithoutLeases:
    """An event store that offers no ``lease_store()``."""

    def __init__(self, store: ClosableEventStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        if name == "lease_store":
            raise AttributeError(name)
        return getattr(self._store, name)


async def test_a_store_without_leases_runs_every_runner_unleased() -> None:
    async with InMemoryEventStore(bank_registry(), poll_interval=0.02) as memory:
        store = cast(ClosableEventStore, _StoreWithoutLeases(memory))
        assert not hasattr(store, "lease_store")
        accounts = await open_accounts(store, a=100, b=0)
        bank = Bank(accounts)
        async with ProcessManagerRunner(
            cast(EventStore, store), [TransferProcess], sender=bank, clock=ManualClock(START)
        ) as runner:
            assert active(runner)
            await request_transfer(store, "t1", "a", "b", 10)
            await settle(runner, store)
        assert not active(runner)
        assert await balances(accounts, "a", "b") == [90, 10]
        assert memory.lease_store().held() == []


async def test_lease_interval_must_be_positive() -> None:
    async with open_event_store("memory://", registry=bank_registry()) as store:
        bank = Bank(Repository(store, Account))
        with pytest.raises(ValueError, match="lease_interval"):
            ProcessManagerRunner(store, [TransferProcess], sender=bank, lease_interval=0)


def _start_worker(url: str, schema: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(WORKER), url, schema, str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _state(path: Path) -> dict[str, object]:
    try:
        found: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return found


async def _wait_for(path: Path, key: str) -> object:
    with anyio.fail_after(20):
        while not _state(path).get(key):  # noqa: ASYNC110 - another process writes the file
            await anyio.sleep(0.02)
    return _state(path)[key]


async def test_a_killed_runner_process_on_postgres_is_taken_over_and_its_transfers_completed(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    """The process holding the lease hangs sending a credit and is killed; the standby finishes."""
    async with open_event_store(
        postgres_url,
        registry=bank_registry(),
        schema=pg_schema,
        auto_migrate=True,
        poll_interval=0.05,
    ) as store:
        accounts = await open_accounts(store, a=100, b=0)
        state = tmp_path / "worker.json"
        worker = _start_worker(postgres_url, pg_schema, state, tmp_path / "worker.log")
        try:
            await _wait_for(state, "active")
            bank = Bank(accounts)
            async with ProcessManagerRunner(
                store, [TransferProcess], sender=bank, lease_interval=0.1
            ) as runner:
                assert not active(runner)
                for transfer_id in ("t1", "t2", "t3"):
                    await request_transfer(store, transfer_id, "a", "b", 10)
                stalled = await _wait_for(state, "stalled")
                await anyio.sleep(0.3)
                assert not active(runner)
                assert bank.sent == []

                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                await until_active(runner)
                await settle(runner, store)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

        assert await balances(accounts, "a", "b") == [70, 30]
        transfers = Repository(store, TransferProcess)
        for transfer_id in ("t1", "t2", "t3"):
            assert (await transfers.get(transfer_id)).outcome == "completed"
        # The credit that hung in the killed process was sent again, once, by the standby.
        assert ("Credit", stalled) in sent(bank)
        assert Counter(sent(bank)).most_common(1)[0][1] == 1
        assert (await types_in(store, "account-a")).count("bank.AccountDebited") == 3
        assert (await types_in(store, "account-b")).count("bank.AccountCredited") == 3
