"""The kit's sample events, registry and helpers shared by its contracts."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio

from uno.events import (
    Event,
    EventRegistry,
    EventStore,
    RecordedEvent,
)

__all__ = [
    "AccountOpened",
    "AccountSnapshot",
    "MoneyDeposited",
    "Rollback",
    "TransactionalStore",
    "Unregistered",
    "all_events",
    "contract_registry",
    "deposits",
    "settled",
]


class AccountOpened(Event):
    """A sample event of the kit."""

    event_type = "uno_contract.AccountOpened"
    owner: str


class MoneyDeposited(Event):
    """A sample event of the kit."""

    event_type = "uno_contract.MoneyDeposited"
    amount: int
    note: str = ""


class AccountSnapshot(Event):
    """A sample snapshot state of the kit."""

    event_type = "uno_contract.AccountSnapshot"
    balance: int


class Unregistered(Event):
    event_type = "uno_contract.Unregistered"


def contract_registry() -> EventRegistry:
    """Return a registry holding the kit's sample events."""
    registry = EventRegistry()
    registry.register(AccountOpened, MoneyDeposited, AccountSnapshot)
    return registry


class TransactionalStore(Protocol):
    """A store whose appends can join a transaction that the caller may roll back."""

    def transaction(self) -> AbstractAsyncContextManager[EventStore]:
        """Open a transaction; leaving the block with an exception rolls it back."""
        ...


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


def deposits(count: int, start: int = 1) -> list[MoneyDeposited]:
    return [MoneyDeposited(amount=n) for n in range(start, start + count)]


async def all_events(store: EventStore, **kwargs: Any) -> list[RecordedEvent[Event]]:
    return [event async for event in store.read_all(**kwargs)]


async def settled(store: EventStore, position: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until readers of the global log see ``position``.

    On PostgreSQL an event is readable once every transaction that began
    before it ended, in the whole server: another client's open transaction
    delays it. Tests that assert on the log's end wait for it first.
    """
    with anyio.fail_after(timeout):
        while await store.log_position() < position:
            await anyio.sleep(0.01)
