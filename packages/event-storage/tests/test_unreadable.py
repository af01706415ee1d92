"""What append refuses, and how readers get past a stored event that does not decode.

Bad rows "already stored" (written before append checked, or by another
program) are written here through a serializer that skips the check, into
the real memory, SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from uno.event_storage import EventStoreBase, InMemoryEventStore, SQLiteEventStore
from uno.event_storage.testing import contract_registry, settled
from uno.events import (
    Event,
    EventRegistry,
    JsonSerializer,
    MsgPackSerializer,
    RawEvent,
    RecordedEvent,
    Serializer,
)
from uno.events.exceptions import EventDecodeError, EventEncodeError, UnknownEventType

pytestmark = pytest.mark.anyio


class Reading(Event):
    """A sensor reading: a count, a float and tags."""

    event_type = "test_unreadable.Reading"
    count: int
    value: float
    tags: list[str] = msgspec.field(default_factory=list)
    extra: Any = None


class Ghost(Event):
    """A type the reading stores do not register."""

    event_type = "test_unreadable.Ghost"
    note: str


class _Unchecked(JsonSerializer):
    """JSON as msgspec writes it, without the read-back check: how bad rows got stored."""

    def encode(self, event: Event) -> bytes:
        return msgspec.json.encode(event)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _registry() -> EventRegistry:
    registry = contract_registry()
    registry.register(Reading)
    return registry


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStoreBase]:
    registry = _registry()
    opened: EventStoreBase
    if request.param == "memory":
        opened = InMemoryEventStore(registry, poll_interval=0.05)
    elif request.param == "sqlite":
        opened = await SQLiteEventStore.from_url(
            f"sqlite:///{tmp_path / 'events.db'}", registry=registry, poll_interval=0.05
        )
    else:
        from uno.event_storage.postgres import PostgresEventStore  # noqa: PLC0415

        url = request.getfixturevalue("postgres_url")
        schema = f"uno_test_{uuid.uuid4().hex[:12]}"
        opened = await PostgresEventStore.from_url(
            url, registry=registry, schema=schema, auto_migrate=True, poll_interval=0.05
        )
        try:
            async with opened:
                yield opened
        finally:
            _drop_schema(url, schema)
        return
    async with opened:
        yield opened


def _drop_schema(url: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415 - only the PostgreSQL runs need it

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _store_unchecked(
    store: EventStoreBase, stream_id: str, events: list[Event], serializer: Serializer
) -> None:
    """Append ``events`` with ``serializer`` in place of the store's own."""
    checked = store.serializer
    store.serializer = serializer
    try:
        result = await store.append(stream_id, events)
    finally:
        store.serializer = checked
    await settled(store, result.global_position)


async def _bad_log(store: EventStoreBase) -> tuple[list[int], int, int]:
    """Store good, undecodable, good, unknown-type, good; return the good, bad, ghost positions."""
    registry = _registry()
    registry.register(Ghost)
    await store.append("s-1", [Reading(count=1, value=1.0)])
    await _store_unchecked(
        store,
        "s-1",
        [Reading(count=2, value=2.0), Reading(count="3", value=3.0)],  # type: ignore[arg-type]
        _Unchecked(registry),
    )
    await store.append("s-2", [Reading(count=4, value=4.0)])
    await _store_unchecked(store, "s-2", [Ghost(note="boo")], JsonSerializer(registry))
    await store.append("s-2", [Reading(count=6, value=6.0)])
    await settled(store, await store.log_position())
    raw = [r async for r in store.read_all_raw()]
    positions = [r.global_position for r in raw]
    return [positions[i] for i in (0, 1, 3, 5)], positions[2], positions[4]


# -- append refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field", "words"),
    [
        (Reading(count="3", value=1.0), "count", "Expected `int`, got `str`"),  # type: ignore[arg-type]
        (Reading(count=True, value=1.0), "count", "Expected `int`, got `bool`"),
        (Reading(count=1, value=math.nan), "value", "NaN or infinity"),
        (Reading(count=1, value=-math.inf), "value", "NaN or infinity"),
        (Reading(count=1, value=1.0, tags=["a", 2]), "tags[1]", "Expected `str`"),  # type: ignore[list-item]
        (Reading(count=1, value=1.0, extra={"x": [math.inf]}), "extra['x'][0]", "NaN"),
    ],
)
async def test_append_refuses_an_event_that_would_not_read_back_and_stores_nothing(
    store: EventStoreBase, event: Reading, field: str, words: str
) -> None:
    with pytest.raises(EventEncodeError) as raised:
        await store.append("s-1", [Reading(count=0, value=0.0), event])
    assert raised.value.field == field
    assert words in raised.value.reason
    assert raised.value.code == "events.encode_failed"
    assert "Nothing was written" in str(raised.value)
    assert await store.stream_version("s-1") is None


async def test_append_refuses_a_list_that_contains_itself_naming_the_field(
    store: EventStoreBase,
) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(EventEncodeError) as raised:
        await store.append("s-1", [Reading(count=1, value=1.0, extra={"a": loop})])
    assert raised.value.field == "extra['a'][1]"
    assert "contains itself" in str(raised.value)
    assert not isinstance(raised.value.__cause__, EventEncodeError)
    assert await store.stream_version("s-1") is None


async def test_append_takes_values_that_decode_back_though_not_of_the_exact_type(
    store: EventStoreBase,
) -> None:
    """An int in a float field and an IntEnum in an int field read back: the exact check passes."""

    class Level(enum.IntEnum):
        HIGH = 3

    await store.append("s-1", [Reading(count=Level.HIGH, value=2)])
    (event,) = await store.read_stream("s-1")
    assert event.data == Reading(count=3, value=2.0)
    assert type(event.data.count) is int


async def test_msgpack_keeps_nan_which_it_reads_back(tmp_path: Path) -> None:
    registry = _registry()
    async with InMemoryEventStore(registry, serializer=MsgPackSerializer(registry)) as store:
        await store.append("s-1", [Reading(count=1, value=math.nan)])
        with pytest.raises(EventEncodeError):
            await store.append("s-1", [Reading(count="1", value=1.0)])  # type: ignore[arg-type]
        (event,) = await store.read_stream("s-1")
    assert isinstance(event.data, Reading)
    assert math.isnan(event.data.value)


# -- readers get past a bad row --------------------------------------------------


async def test_read_all_yields_the_good_events_before_a_bad_row_then_says_where_it_is(
    store: EventStoreBase,
) -> None:
    good, bad, _ = await _bad_log(store)
    seen: list[int] = []
    with pytest.raises(EventDecodeError) as raised:
        async for event in store.read_all():
            seen.append(event.global_position)  # noqa: PERF401 - kept up to the error
    assert seen == good[:2]
    error = raised.value
    assert (error.stream_id, error.stream_version, error.position) == ("s-1", 3, bad)
    assert (error.event_type, error.version, error.field) == (Reading.event_type, 1, "count")
    assert f"global position {bad} (stream 's-1' version 3)" in str(error)


async def test_read_all_after_the_bad_row_goes_on_and_names_an_unknown_type_too(
    store: EventStoreBase,
) -> None:
    good, bad, ghost = await _bad_log(store)
    seen: list[int] = []
    with pytest.raises(UnknownEventType) as raised:
        async for event in store.read_all(after=bad):
            seen.append(event.global_position)  # noqa: PERF401 - kept up to the error
    assert seen == [good[2]]
    error = raised.value
    assert (error.stream_id, error.stream_version, error.position) == ("s-2", 2, ghost)
    assert error.event_type == Ghost.event_type
    assert [e.global_position async for e in store.read_all(after=ghost)] == [good[3]]


async def test_read_all_raw_yields_every_row_undecoded_with_its_bytes(
    store: EventStoreBase,
) -> None:
    good, bad, ghost = await _bad_log(store)
    raw = [r async for r in store.read_all_raw(batch_size=2)]
    assert [r.global_position for r in raw] == sorted([*good, bad, ghost])
    by_position = {r.global_position: r for r in raw}
    assert isinstance(by_position[bad], RawEvent)
    assert msgspec.json.decode(by_position[bad].data) == {
        "count": "3",
        "value": 3.0,
        "tags": [],
        "extra": None,
    }
    assert (by_position[ghost].event_type, by_position[ghost].event_version) == (
        Ghost.event_type,
        1,
    )
    assert (by_position[ghost].stream_id, by_position[ghost].stream_version) == ("s-2", 2)
    assert by_position[ghost].metadata == b""
    # One row at a time from an error's position, as a runner reads it.
    (one,) = [r async for r in store.read_all_raw(after=bad - 1, batch_size=1)][:1]
    assert one.global_position == bad
    filtered = [r async for r in store.read_all_raw(event_types=[Ghost.event_type])]
    assert [r.global_position for r in filtered] == [ghost]


async def test_read_stream_names_the_bad_row(store: EventStoreBase) -> None:
    _, bad, _ = await _bad_log(store)
    assert len(await store.read_stream("s-1", limit=2)) == 2
    with pytest.raises(EventDecodeError) as raised:
        await store.read_stream("s-1")
    assert (raised.value.stream_id, raised.value.stream_version) == ("s-1", 3)
    assert raised.value.position == bad


# -- subscriptions filter in the store -------------------------------------------


async def _collect(store: EventStoreBase, count: int, **filters: Any) -> list[RecordedEvent[Event]]:
    seen: list[RecordedEvent[Event]] = []
    with anyio.fail_after(10):
        async with store.subscribe(**filters) as subscription:
            async for event in subscription:
                seen.append(event)
                if len(seen) == count:
                    break
    return seen


async def test_a_subscription_filtered_by_type_never_meets_an_unknown_type(
    store: EventStoreBase,
) -> None:
    good, bad, _ = await _bad_log(store)
    seen = await _collect(store, 2, after=bad, event_types=[Reading.event_type])
    assert [e.global_position for e in seen] == [good[2], good[3]]
    live = store.subscribe(after=good[3], event_types=[Reading.event_type])
    await store.append("s-3", [Reading(count=7, value=7.0)])
    async with live:
        async for event in live:
            assert event.stream_id == "s-3"
            break


async def test_a_subscription_by_stream_prefix_keeps_those_streams(store: EventStoreBase) -> None:
    await store.append("a-1", [Reading(count=1, value=1.0)])
    await store.append("b-1", [Reading(count=2, value=1.0)])
    await store.append("a-2", [Reading(count=3, value=1.0)])
    seen = await _collect(store, 2, stream_prefix="a-")
    assert [e.stream_id for e in seen] == ["a-1", "a-2"]


async def test_a_filtered_subscription_position_moves_past_the_events_it_filters_out(
    store: EventStoreBase,
) -> None:
    first = await store.append("a-1", [Reading(count=1, value=1.0)])
    last = await store.append("b-1", [Reading(count=2, value=1.0)])
    await settled(store, last.global_position)
    subscription = store.subscribe(stream_prefix="a-")
    with anyio.fail_after(10):
        async with subscription:
            async for event in subscription:
                assert event.global_position == first.global_position
                break
    assert subscription.position >= first.global_position
    other = store.subscribe(after=first.global_position, stream_prefix="a-")
    with anyio.move_on_after(0.3):
        async with other:
            async for _ in other:
                pytest.fail("nothing after a-1 is in an a- stream")
    assert other.position == last.global_position


async def test_an_unfiltered_subscription_yields_the_good_events_then_raises_at_the_bad_row(
    store: EventStoreBase,
) -> None:
    good, bad, _ = await _bad_log(store)
    seen: list[int] = []
    with anyio.fail_after(10), pytest.raises(EventDecodeError) as raised:
        async with store.subscribe() as subscription:
            async for event in subscription:
                seen.append(event.global_position)  # noqa: PERF401 - kept up to the error
    assert seen == good[:2]
    assert raised.value.position == bad
