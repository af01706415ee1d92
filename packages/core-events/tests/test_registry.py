"""The registry: names and versions to classes, and upcaster chains checked on registration."""

from __future__ import annotations

from typing import Any

import pytest

from uno.events import Event, EventRegistry, typed_upcaster, upcaster
from uno.events.exceptions import (
    DuplicateEventType,
    EventDefinitionError,
    UnregisteredEvent,
    UpcasterChainError,
)


class DepositedV1(Event):
    event_type = "bank.Deposited"
    amount: int


class DepositedV2(Event):
    event_type = "bank.Deposited"
    event_version = 2
    amount: int
    currency: str


class Deposited(Event):
    event_type = "bank.Deposited"
    event_version = 3
    cents: int
    currency: str


@upcaster("bank.Deposited", from_version=1)
def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


@upcaster("bank.Deposited", from_version=2)
def to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data["amount"] * 100, "currency": data["currency"]}


def test_register_returns_the_class_so_it_works_as_a_decorator() -> None:
    registry = EventRegistry()

    @registry.register
    class Opened(Event):
        event_type = "bank.Opened"

    assert Opened in registry
    assert registry.identity(Opened) == ("bank.Opened", 1)
    assert registry.get("bank.Opened", 1) is Opened


def test_registering_the_same_class_twice_is_a_no_op() -> None:
    registry = EventRegistry()
    registry.register(Deposited)
    registry.register(Deposited)
    assert list(registry) == [Deposited]


def test_two_classes_under_one_name_and_version_fail_naming_both() -> None:
    registry = EventRegistry()
    registry.register(Deposited)

    class Impostor(Event):
        event_type = "bank.Deposited"
        event_version = 3

    with pytest.raises(DuplicateEventType) as info:
        registry.register(Impostor)
    message = str(info.value)
    assert "Deposited" in message
    assert "Impostor" in message
    assert info.value.existing is Deposited
    assert info.value.new is Impostor
    assert info.value.code == "events.duplicate_event_type"
    assert registry.get("bank.Deposited", 3) is Deposited


def test_several_versions_of_one_type_coexist() -> None:
    registry = EventRegistry()
    registry.register(Deposited, DepositedV1, DepositedV2)
    assert registry.versions("bank.Deposited") == (1, 2, 3)
    assert registry.latest("bank.Deposited") is Deposited
    assert len(registry) == 3


def test_abstract_and_foreign_classes_cannot_be_registered() -> None:
    class BankEvent(Event):
        pass

    registry = EventRegistry()
    with pytest.raises(EventDefinitionError, match="declares no event_type"):
        registry.register(BankEvent)
    with pytest.raises(EventDefinitionError, match="only Event subclasses"):
        registry.register(int)  # type: ignore[type-var]


def test_identity_of_an_unregistered_class_raises() -> None:
    with pytest.raises(UnregisteredEvent, match="registry.register"):
        EventRegistry().identity(Deposited)


def test_a_whole_chain_is_accepted_and_composes_in_order() -> None:
    registry = EventRegistry()
    registry.register(Deposited)
    registry.add_upcasters(to_cents, add_currency)
    assert registry.chain("bank.Deposited", 1) == (add_currency, to_cents)
    assert registry.chain("bank.Deposited", 2) == (to_cents,)
    assert registry.chain("bank.Deposited", 3) == ()
    assert registry.chain("bank.Deposited", 4) is None
    assert registry.chain("bank.Unknown", 1) is None


def test_a_chain_can_be_extended_at_its_old_end() -> None:
    registry = EventRegistry()
    registry.register(Deposited)
    registry.add_upcasters(to_cents)
    registry.add_upcasters(add_currency)
    assert registry.chain("bank.Deposited", 1) == (add_currency, to_cents)


def test_a_missing_link_is_reported_when_the_chain_is_registered() -> None:
    registry = EventRegistry()
    registry.register(Deposited)
    with pytest.raises(UpcasterChainError, match="missing the link from version 2 to 3") as info:
        registry.add_upcasters(add_currency)
    assert info.value.code == "events.upcaster_chain_broken"
    assert registry.chain("bank.Deposited", 1) is None


def test_a_gap_in_the_middle_is_reported() -> None:
    class Deposited5(Event):
        event_type = "bank.Deposited"
        event_version = 5

    @upcaster("bank.Deposited", from_version=4)
    def four(data: dict[str, Any]) -> dict[str, Any]:
        return data

    registry = EventRegistry()
    registry.register(Deposited5)
    with pytest.raises(UpcasterChainError, match="from version 3 to 4"):
        registry.add_upcasters(add_currency, to_cents, four)


def test_two_links_from_one_version_are_rejected() -> None:
    registry = EventRegistry()
    registry.register(Deposited)
    registry.add_upcasters(add_currency, to_cents)
    again = upcaster("bank.Deposited", from_version=2)(lambda data: data)
    with pytest.raises(UpcasterChainError, match="two upcasters from version 2"):
        registry.add_upcasters(again)
    assert registry.chain("bank.Deposited", 2) == (to_cents,)


def test_a_link_past_the_latest_class_is_rejected() -> None:
    registry = EventRegistry()
    registry.register(DepositedV2)
    with pytest.raises(UpcasterChainError, match="past the latest registered class"):
        registry.add_upcasters(add_currency, to_cents)


def test_upcasters_of_an_unregistered_type_are_rejected() -> None:
    with pytest.raises(UpcasterChainError, match="register the classes first"):
        EventRegistry().add_upcasters(add_currency)


def test_a_failed_chain_registers_nothing_for_any_type() -> None:
    class Other(Event):
        event_type = "bank.Other"
        event_version = 2

    ok = upcaster("bank.Other", from_version=1)(lambda data: data)
    registry = EventRegistry()
    registry.register(Deposited, Other)
    with pytest.raises(UpcasterChainError):
        registry.add_upcasters(ok, add_currency)
    assert registry.chain("bank.Other", 1) is None


def test_a_class_newer_than_the_chain_end_is_rejected() -> None:
    class Deposited4(Event):
        event_type = "bank.Deposited"
        event_version = 4

    registry = EventRegistry()
    registry.register(Deposited)
    registry.add_upcasters(add_currency, to_cents)
    with pytest.raises(UpcasterChainError, match="missing the link from version 3 to 4"):
        registry.register(Deposited4)
    assert registry.latest("bank.Deposited") is Deposited

    @upcaster("bank.Deposited", from_version=3)
    def three_to_four(data: dict[str, Any]) -> dict[str, Any]:
        return data

    registry.register(Deposited4, upcasters=[three_to_four])
    assert registry.latest("bank.Deposited") is Deposited4
    assert registry.chain("bank.Deposited", 1) == (add_currency, to_cents, three_to_four)


def test_adding_the_same_upcaster_again_does_nothing() -> None:
    registry = EventRegistry()
    registry.register(Deposited, upcasters=[add_currency, to_cents])
    registry.add_upcasters(add_currency, to_cents)
    assert registry.chain("bank.Deposited", 1) == (add_currency, to_cents)


def test_a_failed_registration_registers_none_of_its_classes() -> None:
    class Opened(Event):
        event_type = "bank.Opened"

    class Impostor(Event):
        event_type = "bank.Deposited"
        event_version = 3

    registry = EventRegistry()
    registry.register(Deposited)
    with pytest.raises(DuplicateEventType):
        registry.register(Opened, Impostor)
    assert Opened not in registry
    assert len(registry) == 1


def test_a_typed_link_must_produce_the_registered_class() -> None:
    class OtherV3(Event):
        event_type = "bank.Deposited"
        event_version = 3
        cents: int

    @typed_upcaster
    def wrong(old: DepositedV2) -> OtherV3:
        return OtherV3(cents=old.amount)

    registry = EventRegistry()
    registry.register(Deposited)
    with pytest.raises(UpcasterChainError, match="registered as Deposited"):
        registry.add_upcasters(add_currency, wrong)


def test_something_that_is_not_an_upcaster_is_rejected() -> None:
    registry = EventRegistry()
    registry.register(Deposited)
    with pytest.raises(EventDefinitionError, match="is not an upcaster"):
        registry.add_upcasters(lambda data: data)  # type: ignore[arg-type]


class ChangeCounter:
    def __init__(self) -> None:
        self.changes = 0

    def changed(self) -> None:
        self.changes += 1


def test_listeners_hear_of_every_change_while_they_live() -> None:
    registry = EventRegistry()
    counter = ChangeCounter()
    registry.on_change(counter.changed)
    registry.register(Deposited)
    registry.register(Deposited)  # no change: already registered
    registry.add_upcasters(add_currency, to_cents)
    assert counter.changes == 2
    del counter
    registry.register(DepositedV1)  # the dead listener is dropped, not called
    assert registry.identities[DepositedV1] == ("bank.Deposited", 1)
