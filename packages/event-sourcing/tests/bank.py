"""A small bank domain the model tests share: accounts with balances and an overdraft rule."""

from __future__ import annotations

from typing import Self

import msgspec

from uno.event_sourcing import Aggregate, EveryNEvents, InvariantViolation, applies, register_types
from uno.events import Event, EventRegistry


class AccountOpened(Event):
    event_type = "bank.AccountOpened"
    owner: str


class MoneyDeposited(Event):
    event_type = "bank.MoneyDeposited"
    amount: int


class MoneyWithdrawn(Event):
    event_type = "bank.MoneyWithdrawn"
    amount: int


class AccountClosed(Event):
    event_type = "bank.AccountClosed"


class InsufficientFunds(InvariantViolation):
    code = "bank.insufficient_funds"


class AccountState(msgspec.Struct, frozen=True):
    owner: str
    balance: int
    closed: bool


class Account(Aggregate):
    category = "account"
    snapshot_type = AccountState

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.balance = 0
        self.closed = False
        self.applied: list[str] = []

    @classmethod
    def open(cls, aggregate_id: str, owner: str) -> Self:
        account = cls(aggregate_id)
        account.record(AccountOpened(owner=owner))
        return account

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise InvariantViolation(f"deposit a positive amount, not {amount}")
        self._require_open()
        self.record(MoneyDeposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        self._require_open()
        if amount > self.balance:
            raise InsufficientFunds(f"cannot withdraw {amount}: the balance is {self.balance}")
        self.record(MoneyWithdrawn(amount=amount))

    def close(self) -> None:
        self._require_open()
        self.record(AccountClosed())

    def _require_open(self) -> None:
        if self.closed:
            raise InvariantViolation(f"account {self.id} is closed")

    @applies
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.owner
        self.applied.append("opened")

    @applies
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount
        self.applied.append("deposited")

    @applies(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount
        self.applied.append("withdrawn")

    @applies
    def _closed(self, event: AccountClosed) -> None:
        self.closed = True

    def to_snapshot(self) -> AccountState:
        return AccountState(owner=self.owner, balance=self.balance, closed=self.closed)

    @classmethod
    def from_snapshot(cls, aggregate_id: str, state: AccountState) -> Self:
        account = cls(aggregate_id)
        account.owner, account.balance, account.closed = state.owner, state.balance, state.closed
        account.applied.append("snapshot")
        return account


class SnapshottedAccount(Account):
    category = "saccount"
    snapshot_policy = EveryNEvents(3)


def bank_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed)
    return register_types(registry)
