"""The bank's domain: accounts, commands, a transfer saga, and the query side's read model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Self

import msgspec
from pydantic import BaseModel

from uno.cqrs import Query
from uno.cqrs.read_models import Index, ReadModelOptions
from uno.event_sourcing import (
    Aggregate,
    DeadlineReached,
    EveryNEvents,
    InvariantViolation,
    ProcessManager,
    Repository,
    applies,
    handles,
    on_deadline,
    register_types,
    starts,
)
from uno.events import COMMAND_ID_HEADER, Event, EventMetadata, EventRegistry, RecordedEvent

# -- events ---------------------------------------------------------------------------


class AccountOpened(Event):
    event_type = "bank.AccountOpened"
    owner: str


class MoneyDeposited(Event):
    event_type = "bank.MoneyDeposited"
    amount: int
    reference: str = ""


class MoneyWithdrawn(Event):
    event_type = "bank.MoneyWithdrawn"
    amount: int
    reference: str = ""


class AccountFrozen(Event):
    event_type = "bank.AccountFrozen"


class CreditRefused(Event):
    event_type = "bank.CreditRefused"
    transfer_id: str
    reference: str


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


def bank_registry() -> EventRegistry:
    """Return a registry with the bank's events and uno.event_sourcing's own."""
    registry = register_types(EventRegistry())
    registry.register(
        AccountOpened,
        MoneyDeposited,
        MoneyWithdrawn,
        AccountFrozen,
        CreditRefused,
        TransferRequested,
        TransferStarted,
    )
    return registry


# -- the account aggregate --------------------------------------------------------------


class InsufficientFunds(InvariantViolation):
    """A withdrawal larger than the balance."""

    code = "bank.insufficient_funds"


class AccountState(msgspec.Struct, frozen=True):
    owner: str
    balance: int
    frozen: bool
    references: frozenset[str]


class Account(Aggregate):
    """A bank account: its balance never goes below zero."""

    category = "account"
    snapshot_policy = EveryNEvents(5)
    snapshot_type = AccountState

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.balance = 0
        self.frozen = False
        self.references: frozenset[str] = frozenset()  # command ids already handled

    @classmethod
    def open(cls, aggregate_id: str, owner: str) -> Self:
        account = cls(aggregate_id)
        account.record(AccountOpened(owner=owner))
        return account

    def deposit(self, amount: int, reference: str = "") -> None:
        if amount <= 0:
            raise InvariantViolation(f"deposit a positive amount, not {amount}")
        if reference and reference in self.references:
            return  # the same command again: done already
        self.record(MoneyDeposited(amount=amount, reference=reference))

    def withdraw(self, amount: int, reference: str = "") -> None:
        if reference and reference in self.references:
            return
        if amount > self.balance:
            raise InsufficientFunds(
                f"{self.owner} cannot withdraw {amount}: the balance is {self.balance}"
            )
        self.record(MoneyWithdrawn(amount=amount, reference=reference))

    def credit(self, transfer_id: str, amount: int, reference: str) -> None:
        """Take an incoming transfer, unless the account is frozen."""
        if reference in self.references:
            return
        if self.frozen:
            self.record(CreditRefused(transfer_id=transfer_id, reference=reference))
        else:
            self.record(MoneyDeposited(amount=amount, reference=reference))

    def freeze(self) -> None:
        self.record(AccountFrozen())

    @applies
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.owner

    @applies
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount
        self.references |= {event.reference}

    @applies
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount
        self.references |= {event.reference}

    @applies
    def _frozen(self, event: AccountFrozen) -> None:
        self.frozen = True

    @applies
    def _credit_refused(self, event: CreditRefused) -> None:
        self.references |= {event.reference}

    def to_snapshot(self) -> AccountState:
        return AccountState(self.owner, self.balance, self.frozen, self.references)

    @classmethod
    def from_snapshot(cls, aggregate_id: str, state: AccountState) -> Self:
        account = cls(aggregate_id)
        account.owner, account.balance = state.owner, state.balance
        account.frozen, account.references = state.frozen, state.references
        return account


# -- commands and the sender that carries them out ---------------------------------------


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


class Teller:
    """Carries out the transfer's commands on the accounts (a command bus, in a service)."""

    def __init__(self, accounts: Repository[Account]) -> None:
        self.accounts = accounts

    async def send(self, command: object, /, *, metadata: EventMetadata | None = None) -> object:
        reference = metadata.headers[COMMAND_ID_HEADER] if metadata is not None else ""
        if not isinstance(command, Debit | Credit | Refund):
            raise TypeError(f"the teller does not know {command!r}")
        account = await self.accounts.get(command.account_id)
        if isinstance(command, Debit):
            account.withdraw(command.amount, reference)
        elif isinstance(command, Credit):
            account.credit(command.transfer_id, command.amount, reference)
        else:
            account.deposit(command.amount, reference)
        await self.accounts.save(account, metadata=metadata)
        return None


# -- the transfer process manager ----------------------------------------------------------


class Transfer(ProcessManager):
    """Debit the source, credit the target; refund the source if the credit fails."""

    category = "transfer"
    correlation_key = "transfer_id"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.source = self.target = ""
        self.amount = 0

    @starts
    @handles
    def requested(self, event: RecordedEvent[TransferRequested]) -> None:
        data = event.data
        self.record(TransferStarted(source=data.source, target=data.target, amount=data.amount))
        self._send(Debit(account_id=data.source, transfer_id=self.id, amount=data.amount))

    @handles
    def withdrawn(self, event: RecordedEvent[MoneyWithdrawn]) -> None:
        if event.stream_id == Account.stream_id_for(self.source):
            self._send(Credit(account_id=self.target, transfer_id=self.id, amount=self.amount))
            self.schedule("credit-timeout", after=timedelta(minutes=5))

    @handles
    def deposited(self, event: RecordedEvent[MoneyDeposited]) -> None:
        if event.stream_id == Account.stream_id_for(self.target):
            self.complete()

    @handles
    def refused(self, event: RecordedEvent[CreditRefused]) -> None:
        self.refund()

    @on_deadline("credit-timeout")
    def timed_out(self, deadline: DeadlineReached) -> None:
        self.refund()

    def refund(self) -> None:
        """The compensation: the debit cannot be undone, so give the money back."""
        self._send(Refund(account_id=self.source, transfer_id=self.id, amount=self.amount))
        self.complete("compensated")

    def _send(self, command: Debit | Credit | Refund) -> None:
        # The transfer id travels as the correlation id, so that the account events
        # a command causes find their way back to this process (see correlate).
        self.send(command, metadata=EventMetadata(correlation_id=self.id))

    @classmethod
    def correlate(cls, event: RecordedEvent[Event]) -> str | None:
        # Deposits and withdrawals carry the command id, not the transfer id: the
        # process's commands are found through the transfer id in their metadata.
        if isinstance(event.data, MoneyDeposited | MoneyWithdrawn):
            return event.metadata.correlation_id
        return super().correlate(event)

    @applies
    def _started(self, event: TransferStarted) -> None:
        self.source, self.target, self.amount = event.source, event.target, event.amount


# -- the query side: a read model of balances and the queries it answers ----------------


class Balance(BaseModel):
    """One account's balance, as the balances projection keeps it."""

    read_model: ClassVar[ReadModelOptions] = ReadModelOptions(
        name="balances", indexes=(Index("balance"),)
    )

    id: str
    owner: str = ""
    balance: int = 0


class GetBalance(Query):
    account_id: str


class AccountsOverThreshold(Query):
    """The accounts holding at least ``minimum``, richest first."""

    minimum: int
