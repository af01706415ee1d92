"""Serializers: round trips through both codecs, and every way decoding can fail."""

from __future__ import annotations

import enum
import types
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.events import (
    Event,
    EventMetadata,
    EventRegistry,
    JsonSerializer,
    MsgPackSerializer,
    Serializer,
)
from uno.events.exceptions import (
    EventDecodeError,
    EventEncodeError,
    UnknownEventType,
    UnregisteredEvent,
)

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
CODECS = [JsonSerializer, MsgPackSerializer]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    price: Decimal
    note: str | None = None


class OrderPlaced(Event):
    event_type = "shop.OrderPlaced"
    event_version = 4

    order_id: UUID
    placed_at: datetime
    customer: str
    total: Decimal
    lines: list[Line]
    gift_wrap: Line | None = None
    counters: dict[str, int] = msgspec.field(default_factory=dict)
    big: int = 0
    ratio: float = 0.0
    color: Color = Color.RED
    tags: frozenset[str] = frozenset()
    raw: bytes = b""


@pytest.fixture
def registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(OrderPlaced)
    return registry


def _comparable(moment: datetime) -> bool:
    """Keep times with a whole-minute offset that are neither skipped nor repeated.

    Python compares a skipped or repeated local time as unequal to every
    instant in another zone (PEP 495), so such a time cannot show a round trip.
    """
    offset = moment.utcoffset()
    unambiguous = moment.replace(fold=1 - moment.fold).utcoffset() == offset
    return offset is not None and offset.seconds % 60 == 0 and unambiguous


def zoned_datetimes() -> st.SearchStrategy[datetime]:
    # Away from year 1 and 9999, so that every offset still names a valid UTC instant.
    # RFC 3339 offsets have no seconds: JSON drops those of historical local mean
    # times (documented; test_json_drops_offset_seconds pins it down).
    return st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.timezones(),
    ).filter(_comparable)


def decimals() -> st.SearchStrategy[Decimal]:
    return st.decimals(allow_nan=False, allow_infinity=False)


def lines() -> st.SearchStrategy[Line]:
    return st.builds(
        Line,
        sku=st.text(),
        quantity=st.integers(INT64_MIN, UINT64_MAX),
        price=decimals(),
        note=st.none() | st.text(),
    )


def orders(big_ints: st.SearchStrategy[int]) -> st.SearchStrategy[OrderPlaced]:
    return st.builds(
        OrderPlaced,
        order_id=st.uuids(),
        placed_at=zoned_datetimes(),
        customer=st.text(),
        total=decimals(),
        lines=st.lists(lines(), max_size=5),
        gift_wrap=st.none() | lines(),
        counters=st.dictionaries(st.text(), st.integers(INT64_MIN, UINT64_MAX), max_size=5),
        big=big_ints,
        ratio=st.floats(allow_nan=False, allow_infinity=False),
        color=st.sampled_from(Color),
        tags=st.frozensets(st.text(), max_size=5),
        raw=st.binary(),
    )


@settings(max_examples=300)
@given(event=orders(st.integers()))
def test_json_round_trips_arbitrary_events(event: OrderPlaced) -> None:
    registry = EventRegistry()
    registry.register(OrderPlaced)
    serializer = JsonSerializer(registry)
    assert serializer.decode("shop.OrderPlaced", 4, serializer.encode(event)) == event


@settings(max_examples=300)
@given(event=orders(st.integers(INT64_MIN, UINT64_MAX)))
def test_msgpack_round_trips_arbitrary_events(event: OrderPlaced) -> None:
    registry = EventRegistry()
    registry.register(OrderPlaced)
    serializer = MsgPackSerializer(registry)
    assert serializer.decode("shop.OrderPlaced", 4, serializer.encode(event)) == event


FIELD_TYPES: dict[type | object, st.SearchStrategy[object]] = {
    int: st.integers(INT64_MIN, UINT64_MAX),
    str: st.text(),
    bool: st.booleans(),
    Decimal: decimals(),
    UUID: st.uuids(),
    datetime: zoned_datetimes(),
    bytes: st.binary(),
    list[str]: st.lists(st.text(), max_size=4),
    dict[str, int]: st.dictionaries(st.text(), st.integers(INT64_MIN, UINT64_MAX), max_size=4),
    int | None: st.none() | st.integers(INT64_MIN, UINT64_MAX),
    Line | None: st.none() | lines(),
}


@st.composite
def arbitrary_events(draw: st.DrawFn) -> Event:
    """Draw an event class with a random schema, then an instance of it."""
    field_types = draw(st.lists(st.sampled_from(list(FIELD_TYPES)), max_size=8))
    fields = [(f"f{i}", t) for i, t in enumerate(field_types)]
    body = {
        "__annotations__": dict(fields),
        "event_type": "test.Generated",
        "event_version": draw(st.integers(1, 9)),
    }
    cls = types.new_class("Generated", (Event,), exec_body=lambda ns: ns.update(body))
    values = {name: draw(FIELD_TYPES[t]) for name, t in fields}
    event: Event = cls(**values)
    return event


@settings(max_examples=200)
@given(event=arbitrary_events(), codec=st.sampled_from(CODECS))
def test_events_of_any_schema_round_trip_through_both_codecs(
    event: Event, codec: type[JsonSerializer] | type[MsgPackSerializer]
) -> None:
    registry = EventRegistry()
    registry.register(type(event))
    serializer = codec(registry)
    data = serializer.encode(event)
    assert serializer.decode(event.event_type, event.event_version, data) == event


@pytest.mark.parametrize("codec", CODECS)
def test_both_serializers_satisfy_the_protocol(
    codec: type[JsonSerializer] | type[MsgPackSerializer], registry: EventRegistry
) -> None:
    assert isinstance(codec(registry), Serializer)


def test_json_is_plain_json_of_the_fields(registry: EventRegistry) -> None:
    event = OrderPlaced(
        order_id=UUID(int=1),
        placed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        customer="Zoë",
        total=Decimal("12.50"),
        lines=[],
    )
    assert msgspec.json.decode(JsonSerializer(registry).encode(event))["total"] == "12.50"
    assert JsonSerializer.content_type == "application/json"
    assert MsgPackSerializer.content_type == "application/msgpack"


@pytest.mark.parametrize("codec", CODECS)
def test_encoding_an_unregistered_event_raises(
    codec: type[JsonSerializer] | type[MsgPackSerializer],
) -> None:
    event = OrderPlaced(
        order_id=UUID(int=1), placed_at=datetime.now(UTC), customer="x", total=Decimal(1), lines=[]
    )
    with pytest.raises(UnregisteredEvent, match="OrderPlaced is not registered"):
        codec(EventRegistry()).encode(event)


def test_msgpack_rejects_integers_it_cannot_hold(registry: EventRegistry) -> None:
    event = OrderPlaced(
        order_id=UUID(int=1),
        placed_at=datetime.now(UTC),
        customer="x",
        total=Decimal(1),
        lines=[],
        big=2**64,
    )
    with pytest.raises(EventEncodeError, match="shop.OrderPlaced") as info:
        MsgPackSerializer(registry).encode(event)
    assert info.value.code == "events.encode_failed"
    assert (
        JsonSerializer(registry).decode(
            "shop.OrderPlaced", 4, JsonSerializer(registry).encode(event)
        )
        == event
    )


@pytest.mark.parametrize("codec", CODECS)
def test_unknown_type_names_what_is_registered(
    codec: type[JsonSerializer] | type[MsgPackSerializer], registry: EventRegistry
) -> None:
    serializer = codec(registry)
    with pytest.raises(UnknownEventType, match="misspelled, renamed, or not imported") as info:
        serializer.decode("shop.OrderPlacd", 4, b"{}")
    assert info.value.code == "events.unknown_event_type"
    with pytest.raises(UnknownEventType, match="registered versions are 4") as info:
        serializer.decode("shop.OrderPlaced", 2, b"{}")
    assert (info.value.event_type, info.value.version) == ("shop.OrderPlaced", 2)


def test_a_wrongly_typed_field_is_named(registry: EventRegistry) -> None:
    data = b'{"order_id":"00000000-0000-0000-0000-000000000001","placed_at":"2026-01-01T00:00:00Z",'
    data += b'"customer":"x","total":"1","lines":[{"sku":"a","quantity":"two","price":"1"}]}'
    with pytest.raises(EventDecodeError) as info:
        JsonSerializer(registry).decode("shop.OrderPlaced", 4, data)
    error = info.value
    assert (error.event_type, error.version, error.field) == (
        "shop.OrderPlaced",
        4,
        "lines[0].quantity",
    )
    assert "Expected `int`, got `str`" in error.reason
    assert "'shop.OrderPlaced' version 4 in field 'lines[0].quantity'" in str(error)
    assert error.code == "events.decode_failed"


def test_a_missing_field_is_named(registry: EventRegistry) -> None:
    with pytest.raises(EventDecodeError, match="missing required field `order_id`"):
        JsonSerializer(registry).decode("shop.OrderPlaced", 4, b'{"customer":"x"}')


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[1,2", b"null"])
def test_malformed_bytes_raise_decode_error(
    codec: type[JsonSerializer] | type[MsgPackSerializer], registry: EventRegistry, data: bytes
) -> None:
    with pytest.raises(EventDecodeError, match="'shop.OrderPlaced' version 4"):
        codec(registry).decode("shop.OrderPlaced", 4, data)


@pytest.mark.parametrize("codec", CODECS)
def test_metadata_round_trips(
    codec: type[JsonSerializer] | type[MsgPackSerializer], registry: EventRegistry
) -> None:
    metadata = EventMetadata(
        correlation_id="c-1",
        causation_id="e-1",
        tenant_id="acme",
        actor="user:7",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="vendor=1",
        headers={"source": "import"},
    )
    serializer = codec(registry)
    assert serializer.decode_metadata(serializer.encode_metadata(metadata)) == metadata
    assert (
        serializer.decode_metadata(serializer.encode_metadata(EventMetadata())) == EventMetadata()
    )


def test_default_metadata_encodes_to_nothing(registry: EventRegistry) -> None:
    assert JsonSerializer(registry).encode_metadata(EventMetadata()) == b"{}"


def test_a_malformed_traceparent_is_rejected_on_decode(registry: EventRegistry) -> None:
    with pytest.raises(EventDecodeError) as info:
        JsonSerializer(registry).decode_metadata(b'{"traceparent":"00-xyz"}')
    assert info.value.field == "traceparent"


def test_decoded_datetimes_keep_their_instant(registry: EventRegistry) -> None:
    moment = datetime(2026, 3, 29, 2, 30, tzinfo=UTC) + timedelta(microseconds=1)
    event = OrderPlaced(
        order_id=UUID(int=5), placed_at=moment, customer="", total=Decimal(0), lines=[]
    )
    for codec in CODECS:
        serializer = codec(registry)
        decoded = serializer.decode("shop.OrderPlaced", 4, serializer.encode(event))
        assert isinstance(decoded, OrderPlaced)
        assert decoded.placed_at == moment
        assert decoded.placed_at.utcoffset() == timedelta(0)


def test_json_drops_offset_seconds_and_msgpack_keeps_the_instant(registry: EventRegistry) -> None:
    """A documented limit of RFC 3339: offsets such as +04:58:24 (Bishkek, 1924) lose seconds."""
    moment = datetime(1924, 1, 1, tzinfo=ZoneInfo("Asia/Bishkek"))
    event = OrderPlaced(
        order_id=UUID(int=5), placed_at=moment, customer="", total=Decimal(0), lines=[]
    )
    as_json = JsonSerializer(registry)
    from_json = as_json.decode("shop.OrderPlaced", 4, as_json.encode(event))
    as_msgpack = MsgPackSerializer(registry)
    from_msgpack = as_msgpack.decode("shop.OrderPlaced", 4, as_msgpack.encode(event))
    assert isinstance(from_json, OrderPlaced)
    assert isinstance(from_msgpack, OrderPlaced)
    assert from_json.placed_at - moment == timedelta(seconds=24)
    assert from_msgpack.placed_at == moment
