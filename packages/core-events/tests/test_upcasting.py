"""Upcasting on decode: raw and typed links, composition, and failures."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uno.events import (
    Event,
    EventRegistry,
    JsonSerializer,
    MsgPackSerializer,
    RawUpcaster,
    TypedUpcaster,
    Upcaster,
    typed_upcaster,
    upcaster,
)
from uno.events.exceptions import (
    EventDecodeError,
    EventDefinitionError,
    UnknownEventType,
    UpcastError,
)

CODECS = [JsonSerializer, MsgPackSerializer]


class RegisteredV1(Event):
    event_type = "crm.CustomerRegistered"
    name: str


class RegisteredV2(Event):
    event_type = "crm.CustomerRegistered"
    event_version = 2
    name: str
    country: str


class Registered(Event):
    event_type = "crm.CustomerRegistered"
    event_version = 3
    first_name: str
    last_name: str
    country: str


@upcaster("crm.CustomerRegistered", from_version=1)
def add_country(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "country": "NL"}


@typed_upcaster
def split_name(old: RegisteredV2) -> Registered:
    first, _, last = old.name.partition(" ")
    return Registered(first_name=first, last_name=last, country=old.country)


@upcaster("crm.CustomerRegistered", from_version=2)
def split_name_raw(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data["name"].partition(" ")
    return {"first_name": first, "last_name": last, "country": data["country"]}


@typed_upcaster
def add_country_typed(old: RegisteredV1) -> RegisteredV2:
    return RegisteredV2(name=old.name, country="NL")


def serializer_with(codec: type[JsonSerializer | MsgPackSerializer], *links: Upcaster) -> Any:
    registry = EventRegistry()
    registry.register(Registered)
    registry.add_upcasters(*links)
    return codec(registry)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "links",
    [
        (add_country, split_name),
        (add_country, split_name_raw),
        (add_country_typed, split_name),
        (add_country_typed, split_name_raw),
    ],
    ids=["raw-typed", "raw-raw", "typed-typed", "typed-raw"],
)
def test_a_v1_event_is_upcast_to_the_latest_class_on_decode(
    codec: type[JsonSerializer | MsgPackSerializer], links: tuple[Upcaster, Upcaster]
) -> None:
    serializer = serializer_with(codec, *links)
    stored = codec._codec.encode({"name": "Ada Lovelace"})
    assert serializer.decode("crm.CustomerRegistered", 1, stored) == Registered(
        first_name="Ada", last_name="Lovelace", country="NL"
    )
    stored_v2 = codec._codec.encode({"name": "Alan Turing", "country": "UK"})
    assert serializer.decode("crm.CustomerRegistered", 2, stored_v2) == Registered(
        first_name="Alan", last_name="Turing", country="UK"
    )


@given(name=st.text(), country=st.text(), codec=st.sampled_from(CODECS))
def test_v1_to_v3_equals_v1_to_v2_then_v2_to_v3(
    name: str, country: str, codec: type[JsonSerializer | MsgPackSerializer]
) -> None:
    """Composition: the chain from version 1 gives what two single steps give."""
    register_v2 = EventRegistry()
    register_v2.register(RegisteredV2)
    register_v2.add_upcasters(add_country)
    step_one = codec(register_v2).decode(
        "crm.CustomerRegistered", 1, codec._codec.encode({"name": name})
    )

    step_two = serializer_with(codec, add_country, split_name).decode(
        "crm.CustomerRegistered", 2, codec(register_v2).encode(step_one)
    )
    direct = serializer_with(codec, add_country, split_name).decode(
        "crm.CustomerRegistered", 1, codec._codec.encode({"name": name})
    )
    first, _, last = name.partition(" ")
    assert direct == step_two == Registered(first_name=first, last_name=last, country="NL")


def test_an_old_version_registered_without_a_chain_decodes_as_itself() -> None:
    registry = EventRegistry()
    registry.register(Registered, RegisteredV1)
    serializer = JsonSerializer(registry)
    assert serializer.decode("crm.CustomerRegistered", 1, b'{"name":"Ada"}') == RegisteredV1(
        name="Ada"
    )


def test_upcasters_added_after_a_decode_take_effect() -> None:
    registry = EventRegistry()
    registry.register(Registered)
    serializer = JsonSerializer(registry)
    with pytest.raises(
        UnknownEventType, match="No event class for 'crm.CustomerRegistered' version 1"
    ):
        serializer.decode("crm.CustomerRegistered", 1, b'{"name":"Ada B"}')
    registry.add_upcasters(add_country, split_name)
    assert serializer.decode("crm.CustomerRegistered", 1, b'{"name":"Ada B"}') == Registered(
        first_name="Ada", last_name="B", country="NL"
    )


def test_an_upcaster_that_raises_becomes_upcast_error() -> None:
    @upcaster("crm.CustomerRegistered", from_version=2)
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        return {"first_name": data["missing"]}

    serializer = serializer_with(JsonSerializer, add_country, broken)
    with pytest.raises(UpcastError, match="from version 2 to 3 failed: KeyError") as info:
        serializer.decode("crm.CustomerRegistered", 1, b'{"name":"Ada"}')
    assert (info.value.event_type, info.value.from_version) == ("crm.CustomerRegistered", 2)
    assert info.value.code == "events.upcast_failed"


def test_a_typed_upcaster_returning_the_wrong_class_becomes_upcast_error() -> None:
    liar = TypedUpcaster(RegisteredV2, Registered, lambda old: old)
    serializer = serializer_with(JsonSerializer, add_country, liar)
    with pytest.raises(UpcastError, match="returned RegisteredV2, not Registered"):
        serializer.decode("crm.CustomerRegistered", 1, b'{"name":"Ada"}')


def test_an_upcast_result_that_does_not_fit_the_class_names_the_field() -> None:
    @upcaster("crm.CustomerRegistered", from_version=2)
    def incomplete(data: dict[str, Any]) -> dict[str, Any]:
        return {"first_name": data["name"], "last_name": 7, "country": data["country"]}

    serializer = serializer_with(JsonSerializer, add_country, incomplete)
    with pytest.raises(EventDecodeError) as info:
        serializer.decode("crm.CustomerRegistered", 1, b'{"name":"Ada"}')
    assert info.value.field == "last_name"
    assert info.value.version == 3


def test_malformed_old_bytes_raise_decode_error_naming_the_stored_version() -> None:
    serializer = serializer_with(JsonSerializer, add_country, split_name)
    with pytest.raises(EventDecodeError, match="version 1"):
        serializer.decode("crm.CustomerRegistered", 1, b'{"name":')


def test_typed_upcasters_link_adjacent_versions_of_one_type() -> None:
    class Other(Event):
        event_type = "crm.Other"
        event_version = 2

    with pytest.raises(EventDefinitionError, match="two versions of one type"):
        TypedUpcaster(RegisteredV1, Other, lambda old: old)
    with pytest.raises(EventDefinitionError, match="must be version 2, not 3"):
        TypedUpcaster(RegisteredV1, Registered, lambda old: old)

    class Abstract(Event):
        pass

    with pytest.raises(EventDefinitionError, match="declares no event_type"):
        TypedUpcaster(Abstract, Registered, lambda old: old)


def test_typed_upcaster_needs_annotated_event_classes() -> None:
    def unannotated(old):  # type: ignore[no-untyped-def]
        return old

    with pytest.raises(EventDefinitionError, match="one annotated event parameter"):
        typed_upcaster(unannotated)

    def not_events(old: int) -> str:
        return str(old)

    with pytest.raises(EventDefinitionError, match="one annotated event parameter"):
        typed_upcaster(not_events)  # type: ignore[type-var]


def test_typed_upcaster_resolves_classes_defined_in_a_function() -> None:
    class LocalV1(Event):
        event_type = "local.Thing"

    class LocalV2(Event):
        event_type = "local.Thing"
        event_version = 2

    @typed_upcaster
    def up(old: LocalV1) -> LocalV2:
        return LocalV2()

    assert (up.source_class, up.target_class) == (LocalV1, LocalV2)


@pytest.mark.parametrize("version", [0, -3, True, "1"])
def test_raw_upcaster_versions_start_at_one(version: object) -> None:
    with pytest.raises(EventDefinitionError, match="from_version must be an int >= 1"):
        RawUpcaster("crm.CustomerRegistered", version, dict)  # type: ignore[arg-type]


def test_both_kinds_satisfy_the_upcaster_protocol() -> None:
    assert isinstance(add_country, Upcaster)
    assert isinstance(split_name, Upcaster)
    assert add_country.source_class is None
    assert split_name.source_class is RegisteredV2
    assert "add_country" in repr(add_country)
    assert "RegisteredV2 -> Registered" in repr(split_name)


def test_raw_upcasters_receive_json_builtins() -> None:
    seen: list[dict[str, Any]] = []

    @upcaster("crm.CustomerRegistered", from_version=2)
    def spy(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data)
        return split_name_raw(data)

    serializer = serializer_with(JsonSerializer, add_country_typed, spy)
    serializer.decode("crm.CustomerRegistered", 1, msgspec.json.encode({"name": "Ada L"}))
    assert seen == [{"name": "Ada L", "country": "NL"}]


def test_upcasters_can_be_called_like_the_functions_they_wrap() -> None:
    assert add_country({"name": "Ada"}) == {"name": "Ada", "country": "NL"}
    assert split_name(RegisteredV2(name="Ada L", country="NL")) == Registered(
        first_name="Ada", last_name="L", country="NL"
    )
