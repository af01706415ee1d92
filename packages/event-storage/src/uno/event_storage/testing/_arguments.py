"""The contract of a store's arguments: one typed error for each bad value, on every backend.

A position, count, limit or version out of range, of the wrong type (a
``float``, a ``bool``, a ``str``), a filter with a NUL, or stream metadata that
would not read back must raise ``InvalidArgument`` (code
``event_storage.invalid_argument``) naming the parameter, and leave the store
as it was. Hypothesis draws the odd values; the largest valid values must work.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from uno.event_storage.testing._fixtures import (
    AccountSnapshot,
    MoneyDeposited,
    all_events,
    deposits,
)
from uno.events import Direction, Snapshot, StreamAppend
from uno.events.exceptions import InvalidArgument

__all__ = ["ArgumentContract", "TransactionalArgumentContract", "odd_values"]

MAX_POSITION = 2**63 - 1
MAX_VERSION = 2**31 - 1
STREAM = "kit-arguments"
CONSUMER = "kit-consumer"
EXAMPLES = 25

Call = Callable[[Any, Any], Awaitable[object]]


def odd_values(low: int, high: int, *, optional: bool) -> list[object]:
    """Return values that are not an ``int`` in ``[low, high]``: the edges, then hypothesis's."""
    drawn: list[object] = []
    strategy = (
        st.integers(max_value=low - 1)
        | st.integers(min_value=high + 1)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.booleans()
        | st.text(max_size=4)
        | st.decimals(allow_nan=False, places=0)
        | st.binary(max_size=2)
        | st.lists(st.integers(), max_size=1)
    )

    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: object) -> None:
        drawn.append(value)

    collect()
    edges: list[object] = [low - 1, high + 1, 2**64, True, False, 1.5, float(low), math.nan]
    edges += [math.inf, "1", Decimal(1)]
    if not optional:
        edges.append(None)
    return edges + drawn


async def _drain(events: AsyncIterator[object]) -> None:
    async for _ in events:
        pass


async def _subscribe(store: Any, **kwargs: object) -> None:
    async with store.subscribe(**kwargs) as events:
        async for _ in events:
            break


def _reads(parameter: str) -> list[Call]:
    """Every call of the global log that takes ``parameter`` (``after`` or a filter)."""
    calls: list[Call] = [
        lambda s, v: _drain(s.read_all(**{parameter: v})),
        lambda s, v: _subscribe(s, **{parameter: v}),
    ]
    if parameter != "batch_size":
        calls.append(lambda s, v: s.count_events(**{parameter: v}))
    calls.append(lambda s, v: _drain(s.read_all_raw(**{parameter: v})))
    return calls


POSITIONS: dict[str, list[Call]] = {
    "after": _reads("after"),
    "before": [lambda s, v: s.count_events(before=v)],
    "position": [lambda s, v: s.save_checkpoint(CONSUMER, v)],
}
COUNTS: dict[str, tuple[int, bool, list[Call]]] = {
    "batch_size": (1, False, _reads("batch_size")),
    "limit": (0, True, [lambda s, v: s.read_stream(STREAM, limit=v)]),
}
VERSIONS: dict[str, tuple[int, bool, list[Call]]] = {
    "expected_version": (
        0,
        False,
        [
            lambda s, v: s.append(STREAM, deposits(1), expected_version=v),
            lambda s, v: s.append_streams(
                [StreamAppend(stream_id=STREAM, events=deposits(1), expected_version=v)]
            ),
            lambda s, v: s.delete_stream(STREAM, expected_version=v),
        ],
    ),
    "from_version": (0, True, [lambda s, v: s.read_stream(STREAM, from_version=v)]),
    "at_or_below": (0, True, [lambda s, v: s.load_snapshot(STREAM, at_or_below=v)]),
    "snapshot.stream_version": (
        1,
        False,
        [
            lambda s, v: s.save_snapshot(
                Snapshot(stream_id=STREAM, stream_version=v, state=AccountSnapshot(balance=1))
            )
        ],
    ),
}
_STATE_VALUES = {"expected_version": ("any", "no_stream", "stream_exists")}


def _cycle() -> list[object]:
    inner: list[object] = []
    inner.append(inner)
    return inner


@pytest.mark.anyio
class ArgumentContract:
    """Bad arguments raise ``InvalidArgument`` naming them; nothing is read or written."""

    async def _expect_refused(self, store: Any, parameter: str, call: Call, value: object) -> None:
        with pytest.raises(InvalidArgument) as caught:
            await call(store, value)
        error = caught.value
        assert error.code == "event_storage.invalid_argument"
        assert error.parameter == parameter or error.parameter.startswith(f"{parameter}["), (
            f"{parameter}={value!r} was refused as {error.parameter}"
        )
        assert error.value is value or parameter != error.parameter
        assert str(error)  # a message that says what to pass

    async def _unchanged(self, store: Any) -> None:
        """The store holds what ``_seeded`` wrote and nothing else."""
        assert [e.data for e in await all_events(store)] == [MoneyDeposited(amount=1)]
        assert await store.stream_version(STREAM) == 1
        assert await store.load_checkpoint(CONSUMER) is None
        assert await store.load_snapshot(STREAM) is None
        assert await store.get_stream_metadata(STREAM) == {}

    async def _seeded(self, store: Any) -> None:
        await store.append(STREAM, deposits(1))

    async def test_a_bad_global_position_raises_invalid_argument(self, store: Any) -> None:
        await self._seeded(store)
        for parameter, calls in POSITIONS.items():
            for value in odd_values(0, MAX_POSITION, optional=parameter == "before"):
                for call in calls:
                    await self._expect_refused(store, parameter, call, value)
        await self._unchanged(store)

    async def test_a_bad_count_or_limit_raises_invalid_argument(self, store: Any) -> None:
        await self._seeded(store)
        for parameter, (low, optional, calls) in COUNTS.items():
            for value in odd_values(low, MAX_POSITION, optional=optional):
                for call in calls:
                    await self._expect_refused(store, parameter, call, value)
        await self._unchanged(store)

    async def test_a_bad_stream_version_raises_invalid_argument(self, store: Any) -> None:
        await self._seeded(store)
        for parameter, (low, optional, calls) in VERSIONS.items():
            values = odd_values(low, MAX_VERSION, optional=optional)
            values += _STATE_VALUES.get(parameter, ())
            for value in values:
                for call in calls:
                    await self._expect_refused(store, parameter, call, value)
        await self._unchanged(store)

    async def test_the_largest_valid_values_are_accepted(self, store: Any) -> None:
        await self._seeded(store)
        assert await all_events(store, after=MAX_POSITION) == []
        assert await store.count_events(after=MAX_POSITION) == 0
        assert await store.count_events(after=0, before=MAX_POSITION) == 1
        assert await store.read_stream(STREAM, from_version=MAX_VERSION) == []
        assert len(await store.read_stream(STREAM, limit=MAX_POSITION)) == 1
        assert await store.load_snapshot(STREAM, at_or_below=MAX_VERSION) is None
        assert [e.data async for e in store.read_all(batch_size=MAX_POSITION)] == [
            MoneyDeposited(amount=1)
        ]
        await store.save_checkpoint(CONSUMER, MAX_POSITION)
        assert await store.load_checkpoint(CONSUMER) == MAX_POSITION

    @pytest.mark.parametrize(
        ("parameter", "value"),
        [
            ("stream_prefix", "kit\x00"),
            ("stream_prefix", "kit\n"),
            ("stream_prefix", "\ud800"),
            ("stream_prefix", "k" * 513),
            ("stream_prefix", 7),
            ("stream_prefix", b"kit"),
            ("event_types", "uno_contract.MoneyDeposited"),
            ("event_types", b"uno_contract.MoneyDeposited"),
            ("event_types", 7),
            ("event_types", ["ok", "bad\x00"]),
            ("event_types", ["\ud800"]),
            ("event_types", [7]),
            ("event_types", [None]),
        ],
    )
    async def test_a_bad_filter_raises_invalid_argument(
        self, store: Any, parameter: str, value: object
    ) -> None:
        await self._seeded(store)
        for call in _reads(parameter):
            await self._expect_refused(store, parameter, call, value)
        await self._unchanged(store)

    @pytest.mark.parametrize(
        "metadata",
        [
            pytest.param({"x": math.nan}, id="nan"),
            pytest.param({"x": [1.0, -math.inf]}, id="infinity"),
            pytest.param({1: "x"}, id="int key"),
            pytest.param({"x": {"y": {2: 3}}}, id="nested int key"),
            pytest.param({"x": object()}, id="object"),
            pytest.param({"x": _cycle()}, id="cycle"),
            pytest.param([("x", 1)], id="not a mapping"),
            pytest.param("x", id="str"),
        ],
    )
    async def test_stream_metadata_that_would_not_read_back_raises_invalid_argument(
        self, store: Any, metadata: Any
    ) -> None:
        await self._seeded(store)
        call: Call = lambda s, v: s.set_stream_metadata(STREAM, v)  # noqa: E731
        await self._expect_refused(store, "metadata", call, metadata)
        await self._unchanged(store)

    async def test_stream_metadata_is_at_most_max_event_size(self, store: Any) -> None:
        await self._seeded(store)
        limit: int = getattr(store, "max_event_size", 1024 * 1024)
        too_big = {"x": "a" * limit}
        call: Call = lambda s, v: s.set_stream_metadata(STREAM, v)  # noqa: E731
        await self._expect_refused(store, "metadata", call, too_big)
        await self._unchanged(store)
        fits = {"x": "a" * (limit // 2)}
        await store.set_stream_metadata(STREAM, fits)
        assert await store.get_stream_metadata(STREAM) == fits

    async def test_other_bad_arguments_raise_invalid_argument(self, store: Any) -> None:
        await self._seeded(store)
        cases: list[tuple[str, Call, object]] = [
            ("direction", lambda s, v: s.read_stream(STREAM, direction=v), "backwards"),
            ("direction", lambda s, v: s.read_stream(STREAM, direction=v), None),
            ("hard", lambda s, v: s.delete_stream(STREAM, hard=v), "yes"),
            ("hard", lambda s, v: s.delete_stream(STREAM, hard=v), 1),
            ("events", lambda s, v: s.append(STREAM, v), MoneyDeposited(amount=2)),
            ("events", lambda s, v: s.append(STREAM, v), "events"),
            ("events", lambda s, v: s.append(STREAM, v), {MoneyDeposited(amount=2)}),
            ("appends", lambda s, v: s.append_streams([v]), (STREAM, deposits(1))),
            ("snapshot", lambda s, v: s.save_snapshot(v), AccountSnapshot(balance=1)),
        ]
        for parameter, call, value in cases:
            await self._expect_refused(store, parameter, call, value)
        assert [
            e.stream_version for e in await store.read_stream(STREAM, direction=Direction.BACKWARDS)
        ] == [1]
        await self._unchanged(store)


@pytest.mark.anyio
class TransactionalArgumentContract(ArgumentContract):
    """Inside a transaction too; part of ``TransactionalStoreContract``."""

    async def test_a_bad_argument_inside_a_transaction_leaves_it_usable(self, store: Any) -> None:
        await self._seeded(store)
        async with store.transaction() as tx:
            await tx.append(STREAM, deposits(1, start=2))
            for parameter, call, value in [
                ("position", POSITIONS["position"][0], 1.5),
                ("expected_version", VERSIONS["expected_version"][2][0], 2**31),
                ("limit", COUNTS["limit"][2][0], -1),
            ]:
                await self._expect_refused(tx, parameter, call, value)
            await tx.save_checkpoint(CONSUMER, 2)
        assert [e.data.amount for e in await store.read_stream(STREAM)] == [1, 2]
        assert await store.load_checkpoint(CONSUMER) == 2
