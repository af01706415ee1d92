"""A projection gets past a stored event it cannot decode: Skip parks it with its bytes, Stop stops.

Bad rows are written through a serializer that skips the read-back check
(as data written before the check, or by another program, would be); the
"ghost" is a type the runner's store does not register.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from ledger import Balances, Credited, Debited, SqlBalances, StoreOpener

from uno.event_sourcing import (
    ProjectionFailed,
    ProjectionRunner,
    ProjectionState,
    Retry,
    Skip,
    Stop,
)
from uno.event_storage import ClosableEventStore, EventStoreBase
from uno.events import Event, JsonSerializer, TransactionalEventStore
from uno.events.exceptions import EventDecodeError, UnknownEventType

pytestmark = pytest.mark.anyio


class Ghost(Event):
    """A type only the writer registers."""

    event_type = "ledger.Ghost"
    note: str


class _Unchecked(JsonSerializer):
    """JSON as msgspec writes it, without the read-back check."""

    def encode(self, event: Event) -> bytes:
        return msgspec.json.encode(event)


async def _write_unchecked(store: ClosableEventStore, stream_id: str, events: list[Event]) -> None:
    """Append ``events`` through a serializer that checks nothing and knows ``Ghost``."""
    assert isinstance(store, EventStoreBase)
    registry = type(store.registry)()
    registry.register(Credited, Debited, Ghost)
    checked, store.serializer = store.serializer, _Unchecked(registry)
    try:
        await store.append(stream_id, events)
    finally:
        store.serializer = checked


def _bad_credit() -> Any:
    return Credited(amount="lots")  # type: ignore[arg-type]


async def _position_of(store: ClosableEventStore, stream_id: str, version: int) -> int:
    assert isinstance(store, EventStoreBase)
    async for raw in store.read_all_raw():
        if (raw.stream_id, raw.stream_version) == (stream_id, version):
            return raw.global_position
    raise AssertionError(f"{stream_id} v{version} is not stored")


@pytest.mark.parametrize("policy", [Skip(), Retry(max_attempts=3, initial_backoff=0, then=Skip())])
async def test_skip_parks_undecodable_and_unknown_events_in_catch_up_and_live_and_goes_on(
    open_store: StoreOpener, policy: Skip | Retry
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=10)])
        await _write_unchecked(store, "acct-1", [Credited(amount=1), _bad_credit()])
        await store.append("acct-1", [Debited(amount=3)])
        balances = Balances()
        balances.event_types = lambda: frozenset(  # type: ignore[method-assign]
            {"ledger.Credited", "ledger.Debited", "ledger.Ghost"}
        )
        async with ProjectionRunner(
            store, [balances], policy=policy, checkpoint_interval=0
        ) as runner:
            await runner.wait_until_caught_up(timeout=10)
            assert balances.balances == {"acct-1": 10 + 1 - 3}
            # Live: an unknown type, between two good events.
            await store.append("acct-2", [Credited(amount=5)])
            await _write_unchecked(store, "acct-2", [Ghost(note="boo")])
            await store.append("acct-2", [Credited(amount=7)])
            await runner.wait_until_caught_up(timeout=10)
            assert balances.balances == {"acct-1": 8, "acct-2": 12}
            status = (await runner.status())["balances"]
            assert status.state is not ProjectionState.FAILED
            parked = await runner.parked("balances")
        # Past the last event (the parked records, appended after it, may not be reached).
        last = await _position_of(store, "acct-2", 3)
        assert (await store.load_checkpoint("balances") or 0) >= last
    bad, ghost = parked
    assert (bad.stream_id, bad.stream_version, bad.parked_event_type) == (
        "acct-1",
        3,
        "ledger.Credited",
    )
    assert bad.error.startswith("EventDecodeError: ")
    assert bad.raw_data is not None
    assert msgspec.json.decode(bad.raw_data) == {"amount": "lots"}
    assert (bad.parked_event_version, bad.raw_metadata) == (1, b"")
    assert (ghost.stream_id, ghost.stream_version, ghost.parked_event_type) == (
        "acct-2",
        2,
        "ledger.Ghost",
    )
    assert ghost.error.startswith("UnknownEventType: ")
    assert ghost.raw_data is not None
    assert msgspec.json.decode(ghost.raw_data) == {"note": "boo"}


async def test_stop_stops_before_an_undecodable_event_after_applying_the_ones_before(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=10)])
        await _write_unchecked(store, "acct-1", [Credited(amount=1), _bad_credit()])
        await store.append("acct-1", [Debited(amount=3)])
        bad = await _position_of(store, "acct-1", 3)
        balances = Balances()
        async with ProjectionRunner(store, [balances], policy=Stop()) as runner:
            with pytest.raises(ProjectionFailed) as raised:
                await runner.wait_until_caught_up(timeout=10)
            assert balances.balances == {"acct-1": 11}
            assert raised.value.position == bad
            assert isinstance(raised.value.__cause__, EventDecodeError)
            assert (await runner.status())["balances"].state is ProjectionState.FAILED
            assert await runner.parked("balances") == []
        # The checkpoint stays at the last good event, before the bad one.
        assert await store.load_checkpoint("balances") == await _position_of(store, "acct-1", 2)


async def test_replay_of_a_parked_undecodable_event_parks_it_again_while_it_still_fails(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await _write_unchecked(store, "acct-1", [_bad_credit()])
        balances = Balances()
        async with ProjectionRunner(store, [balances], policy=Skip()) as runner:
            await runner.wait_until_caught_up(timeout=10)
            (first,) = await runner.parked("balances")
            result = await runner.replay_parked("balances")
            (again,) = await runner.parked("balances")
        assert (result.replayed, result.parked_again) == (0, 1)
        assert again.raw_data == first.raw_data
        assert again.global_position == first.global_position


async def test_live_and_catch_up_agree_on_a_type_the_store_does_not_register(
    open_store: StoreOpener,
) -> None:
    """A projection that does not handle ``Ghost`` skips it in catch-up and live alike (Stop)."""
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1)])
        await _write_unchecked(store, "log", [Ghost(note="catch-up")])
        balances = Balances()
        async with ProjectionRunner(
            store, [balances], policy=Stop(), checkpoint_interval=0
        ) as runner:
            await runner.wait_until_caught_up(timeout=10)
            await _write_unchecked(store, "log", [Ghost(note="live")])
            await store.append("acct-1", [Credited(amount=2)])
            await _write_unchecked(store, "log", [Ghost(note="live, last")])
            await runner.wait_until_caught_up(timeout=10)
            state = (await runner.status())["balances"].state
        assert balances.balances == {"acct-1": 3}
        assert state is not ProjectionState.FAILED
        assert await store.load_checkpoint("balances") == await store.log_position()
        with pytest.raises(UnknownEventType):
            async with store.subscribe() as subscription:
                async for _ in subscription:
                    pass


async def test_a_transactional_projection_parks_an_undecodable_event_in_its_transaction(
    open_tx_store: StoreOpener,
) -> None:
    async with open_tx_store() as store:
        schema = getattr(getattr(store, "names", None), "schema", None)
        projection = SqlBalances(schema=schema)
        assert isinstance(store, TransactionalEventStore)
        async with store.transaction() as tx:
            await projection.create_tables(tx)
        await store.append("acct-1", [Credited(amount=4)])
        await _write_unchecked(store, "acct-1", [_bad_credit()])
        await store.append("acct-1", [Credited(amount=6)])
        async with ProjectionRunner(store, [projection], policy=Skip()) as runner:
            await runner.wait_until_caught_up(timeout=10)
            (parked,) = await runner.parked(projection.projection_name())
        assert parked.stream_version == 2
        assert parked.raw_data is not None
        assert (
            await store.load_checkpoint(projection.projection_name()) == await store.log_position()
        )
