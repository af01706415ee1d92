"""Event classes: stable names, versions, and what a definition may not do."""

from __future__ import annotations

import msgspec
import pytest

from uno.events import Event, validate_event_type
from uno.events.exceptions import EventDefinitionError


class Opened(Event):
    event_type = "bank.AccountOpened"
    owner: str


class Renamed(Opened):
    event_type = "bank.AccountRenamed"
    event_version = 3
    new_owner: str


def test_event_is_frozen_and_keyword_only() -> None:
    event = Opened(owner="ada")
    with pytest.raises(AttributeError):
        event.owner = "bob"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Opened("ada")  # type: ignore[call-arg]


def test_version_defaults_to_one_and_is_not_inherited() -> None:
    assert Opened.event_version == 1
    assert Renamed.event_version == 3

    class Child(Renamed):
        event_type = "bank.Child"

    assert Child.event_version == 1


def test_class_without_its_own_type_name_is_abstract() -> None:
    class BankEvent(Event):
        account: str

    class Inherits(Opened):
        pass

    assert BankEvent.is_abstract()
    assert Inherits.is_abstract()
    assert not Opened.is_abstract()


def test_type_name_and_version_are_not_fields() -> None:
    assert msgspec.json.encode(Opened(owner="ada")) == b'{"owner":"ada"}'


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1bank",
        "bank..Opened",
        "bank.",
        "bank Opened",
        "bank.Op'; DROP",
        "é.x",
        "a\x00b",
        "x" * 201,
    ],
)
def test_invalid_type_names_are_rejected_at_class_definition(name: str) -> None:
    with pytest.raises(EventDefinitionError, match="not a valid type name"):

        class Bad(Event):
            event_type = name


@pytest.mark.parametrize("name", ["a", "bank.MoneyDeposited", "urn:bank/x-y.Z_1", "x" * 200])
def test_valid_type_names(name: str) -> None:
    assert validate_event_type(name) == name


def test_non_string_type_name_is_rejected() -> None:
    with pytest.raises(EventDefinitionError, match="must be a str"):
        validate_event_type(42)


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.5])
def test_invalid_versions_are_rejected(version: object) -> None:
    with pytest.raises(EventDefinitionError, match="event_version must be an int >= 1") as info:

        class Bad(Event):
            event_type = "x.Bad"
            event_version = version  # type: ignore[assignment]

    assert info.value.code == "events.invalid_definition"
