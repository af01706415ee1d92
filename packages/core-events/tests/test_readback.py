"""encode refuses exactly what decode could not read back, for JSON and MessagePack."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uno.events import Event, EventRegistry, JsonSerializer, MsgPackSerializer
from uno.events.exceptions import EventEncodeError, SerializationError


class Point(msgspec.Struct, frozen=True):
    x: float
    label: str | None = None


class Shape(Event):
    event_type = "test_readback.Shape"
    sides: int
    area: float
    name: str
    points: list[Point] = msgspec.field(default_factory=list)
    weights: dict[str, float] = msgspec.field(default_factory=dict)
    loose: Any = None


_REGISTRY = EventRegistry()
_REGISTRY.register(Shape)
_SERIALIZERS = [JsonSerializer(_REGISTRY), MsgPackSerializer(_REGISTRY)]

_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
)


def _same(left: Any, right: Any) -> bool:
    """Equality in which a NaN equals a NaN (and ``1 == 1.0``, as in Python)."""
    return bool(left == right) or repr(left) == repr(right)


@given(
    sides=_anything,
    area=_anything,
    name=_anything,
    point_x=_anything,
    weight=_anything,
    loose=_anything,
    serializer=st.sampled_from(_SERIALIZERS),
)
def test_encode_refuses_or_the_event_reads_back(
    *,
    sides: Any,
    area: Any,
    name: Any,
    point_x: Any,
    weight: Any,
    loose: Any,
    serializer: JsonSerializer,
) -> None:
    event = Shape(
        sides=sides,
        area=area,
        name=name,
        points=[Point(x=point_x)],
        weights={"w": weight},
        loose=loose,
    )
    refused: EventEncodeError | None = None
    try:
        data = serializer.encode(event)
    except EventEncodeError as exc:
        refused = exc
    if refused is None:
        decoded = serializer.decode(Shape.event_type, 1, data)
        assert isinstance(decoded, Shape)
        assert _same(decoded, event)
    elif isinstance(serializer, JsonSerializer):
        # What was refused indeed does not read back: it fails, or comes back changed.
        assert refused.code == "events.encode_failed"
        assert not _reads_back(serializer, event)


def _reads_back(serializer: JsonSerializer, event: Shape) -> bool:
    try:
        decoded = serializer.decode(Shape.event_type, 1, msgspec.json.encode(event))
    except SerializationError:
        return False
    return _same(decoded, event)


@pytest.mark.parametrize("serializer", _SERIALIZERS, ids=["json", "msgpack"])
def test_a_dict_inside_itself_is_refused_naming_where(serializer: JsonSerializer) -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(EventEncodeError) as raised:
        serializer.encode(Shape(sides=3, area=1.0, name="t", loose=[loop]))
    assert raised.value.field == "loose[0]['me']"


def test_json_refuses_nan_where_it_would_come_back_as_none() -> None:
    """An optional field would read a NaN back as None: JSON refuses it rather than lose it."""
    with pytest.raises(EventEncodeError) as raised:
        _SERIALIZERS[0].encode(Shape(sides=3, area=1.0, name="t", loose={"k": math.nan}))
    assert raised.value.field == "loose['k']"
