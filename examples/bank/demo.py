"""The bank example: what uno does so far, end to end, printed step by step.

Run it with ``nox -s demo``. It defines the bank's events, serializes them with
their metadata, and reads back an event written by an older version of the
service, upcast to today's shape. Later issues grow this into the full
service (event store, aggregates, projections, HTTP).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from uno.events import (
    Event,
    EventMetadata,
    EventRegistry,
    JsonSerializer,
    MsgPackSerializer,
    RecordedEvent,
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


def main() -> None:
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
        print(f"\nan unknown type is refused with code {error.code!r}:\n  {error}")
    print("\ndone: events defined, serialized with metadata, old versions upcast on read.")


if __name__ == "__main__":
    main()
