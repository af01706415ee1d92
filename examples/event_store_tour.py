"""A tour of events and the event store, below the domain layer, printed step by step.

Run it with ``python examples/event_store_tour.py``. Part one defines the bank's events, serializes
them with their metadata, and reads back events written by older versions of
the service, upcast to today's shape. Part two keeps them in the embedded
event store (SQLite, in a temporary directory): expected versions, an
idempotent retry, an atomic transfer across two streams, a balance projection
fed by a subscription with a checkpoint, and a snapshot. The bank demo
(``examples/bank/demo.py``, ``nox -s demo``) builds on the layer above it:
aggregates, projections and process managers.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import msgspec

from uno.event_storage import open_event_store
from uno.events import (
    NO_STREAM,
    Event,
    EventMetadata,
    EventRegistry,
    JsonSerializer,
    MsgPackSerializer,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamAppend,
    WrongExpectedVersion,
    typed_upcaster,
    upcaster,
    uuid7,
)
from uno.events.exceptions import UnknownEventType


class AccountOpened(Event):
    """A customer opened an account."""

    event_type = "bank.AccountOpened"

    account_id: UUID
    owner: str


class MoneyDepositedV1(Event):
    """How version 1 of the service recorded a deposit: no currency, a float amount."""

    event_type = "bank.MoneyDeposited"

    account_id: UUID
    amount: float


class MoneyDepositedV2(Event):
    """Version 2 added the currency."""

    event_type = "bank.MoneyDeposited"
    event_version = 2

    account_id: UUID
    amount: float
    currency: str


class MoneyDeposited(Event):
    """Version 3, today's: an exact decimal amount."""

    event_type = "bank.MoneyDeposited"
    event_version = 3

    account_id: UUID
    amount: Decimal
    currency: str


@upcaster("bank.MoneyDeposited", from_version=1)
def assume_euros(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 only ever handled euros."""
    return {**data, "currency": "EUR"}


@typed_upcaster
def exact_amount(old: MoneyDepositedV2) -> MoneyDeposited:
    """Turn the float amount into an exact decimal of cents."""
    return MoneyDeposited(
        account_id=old.account_id,
        amount=Decimal(str(old.amount)).quantize(Decimal("0.01")),
        currency=old.currency,
    )


def build_registry() -> EventRegistry:
    """Register today's classes, then the chain that brings old versions up to date."""
    registry = EventRegistry()
    registry.register(AccountOpened, MoneyDeposited)
    registry.add_upcasters(assume_euros, exact_amount)
    return registry


def show_events() -> None:
    """Walk through events, metadata, both codecs and upcasting."""
    registry = build_registry()
    json = JsonSerializer(registry)
    account = uuid7()
    print("uno demo: the bank's events\n")

    opened = AccountOpened(account_id=account, owner="Ada Lovelace")
    deposit = MoneyDeposited(account_id=account, amount=Decimal("125.50"), currency="GBP")
    metadata = EventMetadata(correlation_id="signup-42", actor="user:ada", tenant_id="london")
    for event in (opened, deposit):
        data = json.encode(event)
        print(f"encoded {event.event_type} v{event.event_version} as JSON: {data.decode()}")
        assert json.decode(event.event_type, event.event_version, data) == event
    print(f"metadata as JSON: {json.encode_metadata(metadata).decode()}")

    msgpack = MsgPackSerializer(registry)
    packed = msgpack.encode(deposit)
    as_json = json.encode(deposit)
    print(f"the same deposit as MessagePack: {len(packed)} bytes instead of {len(as_json)}")

    recorded = RecordedEvent(
        event_id=uuid7(),
        stream_id=f"account-{account}",
        stream_version=2,
        global_position=2,
        recorded_at=datetime.now(UTC),
        event_type=deposit.event_type,
        event_version=deposit.event_version,
        data=deposit,
        metadata=metadata,
    )
    follow_up = EventMetadata.caused_by(recorded)
    print(
        f"a reaction to event {recorded.event_id} keeps correlation "
        f"{follow_up.correlation_id!r} and records causation {follow_up.causation_id!r}"
    )

    print("\nreading events that version 1 and 2 of the service wrote:")
    stored_v1 = msgspec.json.encode({"account_id": str(account), "amount": 10.1})
    stored_v2 = msgspec.json.encode({"account_id": str(account), "amount": 7.25, "currency": "USD"})
    for version, stored in ((1, stored_v1), (2, stored_v2)):
        upcast = json.decode("bank.MoneyDeposited", version, stored)
        print(f"  stored v{version} {stored.decode()}\n    -> read as {upcast!r}")
        assert isinstance(upcast, MoneyDeposited)

    try:
        json.decode("bank.MoneyWithdrawn", 1, b"{}")
    except UnknownEventType as error:
        print(f"\nan unknown type is refused with code {error.code!r}:\n  {error}\n")
    print("events: defined, serialized with metadata, old versions upcast on read.")


class BalanceSnapshot(Event):
    """The state of an account at one version, to load it without replaying."""

    event_type = "bank.BalanceSnapshot"

    balance: Decimal


async def show_event_store(directory: Path) -> None:
    """Keep the bank's events in the embedded SQLite store and project balances."""
    registry = build_registry()
    registry.register(BalanceSnapshot)
    url = f"sqlite:///{directory / 'bank.db'}"
    print(f"\nuno demo: the event store at {url}\n")
    async with open_event_store(url, registry=registry) as store:
        ada, bob = f"account-{uuid7()}", f"account-{uuid7()}"
        await store.append(
            ada, [AccountOpened(account_id=uuid7(), owner="Ada")], expected_version=NO_STREAM
        )
        await store.append(
            bob, [AccountOpened(account_id=uuid7(), owner="Bob")], expected_version=NO_STREAM
        )
        deposit = NewEvent(
            data=MoneyDeposited(account_id=uuid7(), amount=Decimal(100), currency="EUR")
        )
        first = await store.append(ada, [deposit], expected_version=1)
        retried = await store.append(ada, [deposit], expected_version=1)
        print(
            f"deposit to Ada: version {first.stream_version}; "
            f"a retry wrote nothing: {retried == first}"
        )
        try:
            await store.append(ada, [deposit.data], expected_version=1)
        except WrongExpectedVersion as error:
            print(f"a stale writer is refused: {error}")

        transfer = [
            StreamAppend(
                stream_id=ada,
                events=[MoneyDeposited(account_id=uuid7(), amount=Decimal(-30), currency="EUR")],
                expected_version=2,
            ),
            StreamAppend(
                stream_id=bob,
                events=[MoneyDeposited(account_id=uuid7(), amount=Decimal(30), currency="EUR")],
                expected_version=1,
            ),
        ]
        results = await store.append_streams(transfer)
        versions = [r.stream_version for r in results]
        print(f"transfer of 30 EUR committed to both streams at once: versions {versions}")

        balances: dict[str, Decimal] = {}
        checkpoint = await store.load_checkpoint("balances") or 0
        async with store.subscribe(after=checkpoint) as subscription:
            async for recorded in subscription:
                if isinstance(recorded.data, MoneyDeposited):
                    balances[recorded.stream_id] = (
                        balances.get(recorded.stream_id, Decimal(0)) + recorded.data.amount
                    )
                checkpoint = recorded.global_position
                if checkpoint == results[-1].global_position:
                    break
        await store.save_checkpoint("balances", checkpoint)
        print(f"balances projected from the global log: Ada {balances[ada]}, Bob {balances[bob]}")

        await store.save_snapshot(
            Snapshot(stream_id=ada, stream_version=3, state=BalanceSnapshot(balance=balances[ada]))
        )
        snapshot = await store.load_snapshot(ada)
        assert snapshot is not None
        print(f"snapshot of Ada's account at version {snapshot.stream_version}: {snapshot.state!r}")
        amounts = [
            str(e.data.amount)
            async for e in store.read_all(event_types=["bank.MoneyDeposited"])
            if isinstance(e.data, MoneyDeposited)
        ]
        print(f"{len(amounts)} deposits in the global log, in order: {amounts}")
    print("event store: expected versions, a safe retry, an atomic transfer, a projection.")


def main() -> None:
    """Run both parts."""
    show_events()
    with tempfile.TemporaryDirectory(prefix="uno-demo-") as directory:
        anyio.run(show_event_store, Path(directory))
    print("\ndone.")


if __name__ == "__main__":
    main()
