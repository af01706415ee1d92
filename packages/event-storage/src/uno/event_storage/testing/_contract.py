"""The contract every event store keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from uno.event_storage.exceptions import (
    DuplicateEventId,
    EventTooLarge,
    InvalidStreamId,
    StreamDeleted,
    WrongExpectedVersion,
)
from uno.event_storage.testing._arguments import ArgumentContract
from uno.event_storage.testing._concurrency import run_concurrent_writers
from uno.event_storage.testing._fixtures import (
    AccountOpened,
    AccountSnapshot,
    MoneyDeposited,
    Unregistered,
    all_events,
    contract_registry,
    deposits,
    settled,
)
from uno.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Direction,
    Event,
    EventMetadata,
    EventRegistry,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamAppend,
)
from uno.events.exceptions import UnregisteredEvent

__all__ = ["EventStoreContract"]


@pytest.mark.anyio
class EventStoreContract(ArgumentContract):
    """The contract every event store keeps. Subclass it and provide ``store``."""

    @pytest.fixture
    def registry(self) -> EventRegistry:
        """The registry the ``store`` fixture must use."""
        return contract_registry()

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run the kit on asyncio (override to add trio where the backend allows)."""
        return "asyncio"

    # -- appending and expected versions ---------------------------------------

    async def test_append_then_read_returns_what_was_stored(self, store: EventStore) -> None:
        metadata = EventMetadata(correlation_id="c-1", actor="user:1", headers={"k": "v"})
        first = NewEvent(data=AccountOpened(owner="ada"), metadata=metadata)
        before = datetime.now(UTC) - timedelta(seconds=5)
        result = await store.append(
            "account-1", [first, MoneyDeposited(amount=5)], expected_version=NO_STREAM
        )
        assert (result.stream_id, result.stream_version) == ("account-1", 2)
        events = await store.read_stream("account-1")
        assert [e.data for e in events] == [AccountOpened(owner="ada"), MoneyDeposited(amount=5)]
        assert [e.stream_version for e in events] == [1, 2]
        assert events[0].event_id == first.event_id
        assert events[0].metadata == metadata
        assert events[1].metadata == EventMetadata()
        assert events[0].event_type == "uno_contract.AccountOpened"
        assert events[0].event_version == 1
        assert events[1].global_position == result.global_position
        assert events[0].global_position < events[1].global_position
        for event in events:
            assert event.stream_id == "account-1"
            assert event.recorded_at.utcoffset() == timedelta(0)
            assert before <= event.recorded_at <= datetime.now(UTC) + timedelta(seconds=5)

    async def test_exact_expected_version_appends_and_a_stale_one_raises(
        self, store: EventStore
    ) -> None:
        await store.append("s", deposits(2), expected_version=0)
        result = await store.append("s", deposits(1, 3), expected_version=2)
        assert result.stream_version == 3
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s", deposits(1, 9), expected_version=2)
        assert (info.value.stream_id, info.value.expected, info.value.actual) == ("s", 2, 3)
        assert [e.data.amount for e in await store.read_stream("s")] == [1, 2, 3]  # type: ignore[attr-defined]

    async def test_stream_state_expectations(self, store: EventStore) -> None:
        with pytest.raises(WrongExpectedVersion) as missing:
            await store.append("s", deposits(1), expected_version=STREAM_EXISTS)
        assert missing.value.actual is None
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", deposits(1), expected_version=4)
        await store.append("s", deposits(1), expected_version=NO_STREAM)
        with pytest.raises(WrongExpectedVersion) as exists:
            await store.append("s", deposits(1), expected_version=NO_STREAM)
        assert (exists.value.expected, exists.value.actual) == (NO_STREAM, 1)
        with pytest.raises(WrongExpectedVersion):
            await store.append("s", deposits(1), expected_version=0)
        await store.append("s", deposits(1), expected_version=STREAM_EXISTS)
        await store.append("s", deposits(1), expected_version=ANY)
        assert await store.stream_version("s") == 3
        assert await store.stream_version("nothing") is None

    async def test_retrying_an_append_with_the_same_ids_stores_it_once(
        self, store: EventStore
    ) -> None:
        batch = [NewEvent(data=d) for d in deposits(3)]
        first = await store.append("s", batch, expected_version=NO_STREAM)
        await store.append("s", deposits(1, 10))
        retry = await store.append("s", batch, expected_version=NO_STREAM)
        assert retry == first
        assert [e.stream_version for e in await store.read_stream("s")] == [1, 2, 3, 4]
        assert len(await all_events(store)) == 4

    async def test_reusing_some_stored_ids_is_refused_whole(self, store: EventStore) -> None:
        stored = NewEvent(data=MoneyDeposited(amount=1))
        await store.append("s", [stored])
        fresh = NewEvent(data=MoneyDeposited(amount=2))
        with pytest.raises(DuplicateEventId) as info:
            await store.append("s", [fresh, stored])
        assert info.value.event_ids == (stored.event_id,)
        with pytest.raises(DuplicateEventId):
            await store.append("other", [stored])
        with pytest.raises(DuplicateEventId):
            await store.append("s", [fresh, fresh])
        assert len(await all_events(store)) == 1

    async def test_ids_the_store_assigned_are_unique_and_recognised_when_appended_again(
        self, store: EventStore
    ) -> None:
        # Events appended without ids get them from the store; a caller that
        # reads them back and appends them again (a retry, a copy) is known.
        await store.append("a", deposits(3))
        await store.append("b", deposits(2))
        await store.append("a", deposits(1, 9))
        stored = await all_events(store)
        assert len({e.event_id for e in stored}) == 6
        assert all(e.event_id.version == 7 for e in stored)
        second = stored[1]
        again = NewEvent(data=second.data, event_id=second.event_id)
        retry = await store.append("a", [again])
        assert (retry.stream_version, retry.global_position) == (2, second.global_position)
        with pytest.raises(DuplicateEventId) as elsewhere:
            await store.append("b", [again])
        assert elsewhere.value.event_ids == (second.event_id,)
        with pytest.raises(DuplicateEventId):
            await store.append("a", [NewEvent(data=MoneyDeposited(amount=7)), again])
        with pytest.raises(DuplicateEventId):
            await store.append_streams(
                [
                    StreamAppend(stream_id="c", events=deposits(1)),
                    StreamAppend(stream_id="b", events=[again]),
                ]
            )
        assert [e.event_id for e in await all_events(store)] == [e.event_id for e in stored]

    async def test_one_id_in_two_streams_of_one_append_is_refused_whole(
        self, store: EventStore
    ) -> None:
        shared = NewEvent(data=MoneyDeposited(amount=1))
        with pytest.raises(DuplicateEventId) as info:
            await store.append_streams(
                [
                    StreamAppend(stream_id="a", events=[shared]),
                    StreamAppend(stream_id="b", events=[shared]),
                ]
            )
        assert info.value.event_ids == (shared.event_id,)
        assert await all_events(store) == []

    async def test_an_append_needs_events(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append("s", [])

    async def test_multi_stream_append_is_atomic(self, store: EventStore) -> None:
        await store.append("b", deposits(1))
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append_streams(
                [
                    StreamAppend(stream_id="a", events=deposits(2), expected_version=NO_STREAM),
                    StreamAppend(stream_id="b", events=deposits(1), expected_version=NO_STREAM),
                ]
            )
        assert info.value.stream_id == "b"
        assert await store.read_stream("a") == []
        results = await store.append_streams(
            [
                StreamAppend(stream_id="a", events=deposits(2), expected_version=NO_STREAM),
                StreamAppend(stream_id="b", events=deposits(1, 7), expected_version=1),
            ]
        )
        assert [(r.stream_id, r.stream_version) for r in results] == [("a", 2), ("b", 2)]
        assert len(await all_events(store)) == 4
        with pytest.raises(ValueError):
            await store.append_streams([StreamAppend(stream_id="a", events=deposits(1))] * 2)
        assert await store.append_streams([]) == []

    # -- reading ---------------------------------------------------------------

    async def test_read_stream_forwards_and_backwards_with_limits(self, store: EventStore) -> None:
        await store.append("s", deposits(10))

        async def versions(**kwargs: Any) -> list[int]:
            return [e.stream_version for e in await store.read_stream("s", **kwargs)]

        assert await versions() == list(range(1, 11))
        assert await versions(from_version=4, limit=3) == [4, 5, 6]
        assert await versions(from_version=9, limit=5) == [9, 10]
        assert await versions(from_version=11) == []
        assert await versions(direction=Direction.BACKWARDS, limit=3) == [10, 9, 8]
        assert await versions(direction=Direction.BACKWARDS, from_version=3) == [3, 2, 1]
        assert await versions(limit=0) == []
        assert await store.read_stream("missing") == []

    async def test_read_all_walks_the_global_log_in_order_in_batches(
        self, store: EventStore
    ) -> None:
        await store.append("a-1", deposits(3))
        await store.append("b-1", [AccountOpened(owner="x")])
        await store.append("a-2", deposits(2, 10))
        events = await all_events(store, batch_size=2)
        assert [(e.stream_id, e.stream_version) for e in events] == [
            ("a-1", 1),
            ("a-1", 2),
            ("a-1", 3),
            ("b-1", 1),
            ("a-2", 1),
            ("a-2", 2),
        ]
        positions = [e.global_position for e in events]
        assert positions == sorted(set(positions))
        after_third = await all_events(store, after=positions[2])
        assert [e.global_position for e in after_third] == positions[3:]
        assert await all_events(store, after=positions[-1]) == []

    async def test_read_all_filters_by_type_and_category(self, store: EventStore) -> None:
        await store.append("account-1", [AccountOpened(owner="a"), *deposits(2)])
        await store.append("ledger-1", deposits(3))
        await store.append("account-2", [AccountOpened(owner="b")])
        opened = await all_events(store, event_types=["uno_contract.AccountOpened"], batch_size=1)
        assert [e.stream_id for e in opened] == ["account-1", "account-2"]
        accounts = await all_events(store, stream_prefix="account-", batch_size=2)
        assert [e.stream_id for e in accounts] == ["account-1"] * 3 + ["account-2"]
        both = await all_events(
            store, stream_prefix="ledger-", event_types={"uno_contract.MoneyDeposited"}
        )
        assert len(both) == 3
        assert await all_events(store, stream_prefix="ledger-", event_types=["nope.Nope"]) == []

    async def test_prefixes_are_literal_not_patterns(self, store: EventStore) -> None:
        await store.append("a%b-1", deposits(1))
        await store.append("axb-1", deposits(1))
        await store.append("a_b-1", deposits(1))
        assert [e.stream_id for e in await all_events(store, stream_prefix="a%")] == ["a%b-1"]
        assert [e.stream_id for e in await all_events(store, stream_prefix="a_")] == ["a_b-1"]

    async def test_log_position_names_the_last_event_read_all_returns(
        self, store: EventStore
    ) -> None:
        assert isinstance(store, EventStore)
        assert await store.log_position() == 0
        await store.append("a-1", deposits(2))
        result = await store.append("b-1", deposits(1))
        await settled(store, result.global_position)
        assert await store.log_position() == result.global_position
        assert [e.global_position for e in await all_events(store)][-1] == result.global_position
        assert await all_events(store, after=await store.log_position()) == []
        later = await store.append("a-1", deposits(1, 5))
        await settled(store, later.global_position)
        assert await store.log_position() == later.global_position > result.global_position

    async def test_count_events_counts_what_read_all_returns(self, store: EventStore) -> None:
        assert await store.count_events() == 0
        await store.append("account-1", [AccountOpened(owner="a"), *deposits(2)])
        await store.append("ledger-1", deposits(3))
        last = await store.append("account-2", [AccountOpened(owner="b"), *deposits(1)])
        await settled(store, last.global_position)
        positions = [e.global_position for e in await all_events(store)]
        assert await store.count_events() == len(positions) == 8
        filters: list[dict[str, Any]] = [
            {},
            {"event_types": ["uno_contract.AccountOpened"]},
            {"event_types": {"uno_contract.MoneyDeposited", "nope.Nope"}},
            {"stream_prefix": "account-"},
            {"stream_prefix": "ledger-", "event_types": ["uno_contract.MoneyDeposited"]},
            {"stream_prefix": "account-", "event_types": []},
        ]
        bounds = [0, positions[0], positions[2], positions[5], positions[-1]]
        for kwargs in filters:
            for after in bounds:
                for before in [None, *bounds]:
                    expected = [
                        e
                        for e in await all_events(store, after=after, **kwargs)
                        if before is None or e.global_position <= before
                    ]
                    counted = await store.count_events(after=after, before=before, **kwargs)
                    assert counted == len(expected), (after, before, kwargs)
        with pytest.raises(ValueError):
            await store.count_events(after=-1)

    async def test_count_events_leaves_out_erased_streams(self, store: EventStore) -> None:
        await store.append("person-1", deposits(3))
        kept = await store.append("other", deposits(2))
        await store.delete_stream("person-1", hard=True)
        await settled(store, kept.global_position)
        assert await store.count_events() == 2
        assert await store.count_events(stream_prefix="person-") == 0
        assert await store.log_position() == kept.global_position

    # -- snapshots, metadata, checkpoints --------------------------------------

    async def test_snapshots_load_the_latest_at_or_below_a_version(self, store: EventStore) -> None:
        snapshots: Any = store
        await store.append("s", deposits(10))
        assert await snapshots.load_snapshot("s") is None
        for version, balance in ((3, 6), (7, 28), (5, 15)):
            await snapshots.save_snapshot(
                Snapshot(
                    stream_id="s", stream_version=version, state=AccountSnapshot(balance=balance)
                )
            )
        latest = await snapshots.load_snapshot("s")
        assert latest == Snapshot(
            stream_id="s", stream_version=7, state=AccountSnapshot(balance=28)
        )
        assert (await snapshots.load_snapshot("s", at_or_below=6)).stream_version == 5
        assert await snapshots.load_snapshot("s", at_or_below=2) is None
        await snapshots.save_snapshot(
            Snapshot(stream_id="s", stream_version=7, state=AccountSnapshot(balance=99))
        )
        assert (await snapshots.load_snapshot("s")).state == AccountSnapshot(balance=99)

    async def test_stream_metadata_is_replaced_whole(self, store: EventStore) -> None:
        assert await store.get_stream_metadata("s") == {}
        await store.set_stream_metadata("s", {"max_age": 3600, "owner": "ops", "tags": ["a"]})
        assert await store.get_stream_metadata("s") == {
            "max_age": 3600,
            "owner": "ops",
            "tags": ["a"],
        }
        await store.set_stream_metadata("s", {"owner": "dev"})
        assert await store.get_stream_metadata("s") == {"owner": "dev"}

    async def test_checkpoints_are_kept_per_consumer(self, store: EventStore) -> None:
        checkpoints: Any = store
        assert await checkpoints.load_checkpoint("projector") is None
        await checkpoints.save_checkpoint("projector", 10)
        await checkpoints.save_checkpoint("relay", 3)
        await checkpoints.save_checkpoint("projector", 12)
        assert await checkpoints.load_checkpoint("projector") == 12
        assert await checkpoints.load_checkpoint("relay") == 3

    # -- deletion --------------------------------------------------------------

    async def test_soft_delete_hides_the_stream_but_keeps_the_log(self, store: EventStore) -> None:
        await store.append("gone", deposits(2))
        await store.append("kept", deposits(1))
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream("gone", expected_version=1)
        await store.delete_stream("gone", expected_version=2)
        with pytest.raises(StreamDeleted) as info:
            await store.read_stream("gone")
        assert info.value.hard is False
        with pytest.raises(StreamDeleted):
            await store.append("gone", deposits(1))
        assert [e.stream_id for e in await all_events(store)] == ["gone", "gone", "kept"]
        assert await store.stream_version("gone") is None

    async def test_hard_delete_erases_events_snapshots_and_metadata(
        self, store: EventStore
    ) -> None:
        snapshots: Any = store
        await store.append("person-1", [AccountOpened(owner="private")])
        await store.append("other", deposits(1))
        await store.set_stream_metadata("person-1", {"pii": True})
        await snapshots.save_snapshot(
            Snapshot(stream_id="person-1", stream_version=1, state=AccountSnapshot(balance=1))
        )
        await store.delete_stream("person-1", hard=True)
        assert [e.stream_id for e in await all_events(store)] == ["other"]
        with pytest.raises(StreamDeleted) as info:
            await store.read_stream("person-1")
        assert info.value.hard is True
        with pytest.raises(StreamDeleted):
            await store.append("person-1", [AccountOpened(owner="again")])
        assert await snapshots.load_snapshot("person-1") is None
        assert await store.get_stream_metadata("person-1") == {}
        await store.delete_stream("person-1", hard=True)  # erasing twice is fine

    async def test_soft_deleted_stream_can_still_be_erased(self, store: EventStore) -> None:
        await store.append("s", deposits(2))
        await store.delete_stream("s")
        await store.delete_stream("s", hard=True)
        assert await all_events(store) == []

    # -- bad input -------------------------------------------------------------

    @pytest.mark.parametrize(
        "stream_id", ["", "a\x00b", "line\nbreak", "x" * 513, "é" * 10_000, "x" * 1_000_000]
    )
    async def test_invalid_stream_ids_are_rejected(self, store: EventStore, stream_id: str) -> None:
        with pytest.raises(InvalidStreamId):
            await store.append(stream_id, deposits(1))
        with pytest.raises(InvalidStreamId):
            await store.read_stream(stream_id)
        assert await all_events(store) == []

    @pytest.mark.parametrize(
        "stream_id",
        [
            "'; DROP TABLE events; --",
            'quote"s and \\backslashes',
            "percent%and_underscore",
            "unicode-日本語-🙂",
            "x" * 512,
            "$1 $$ :name ? %s",
        ],
    )
    async def test_hostile_stream_ids_are_stored_verbatim(
        self, store: EventStore, stream_id: str
    ) -> None:
        await store.append(stream_id, [MoneyDeposited(amount=1, note=stream_id)])
        (event,) = await store.read_stream(stream_id)
        assert event.stream_id == stream_id
        assert event.data == MoneyDeposited(amount=1, note=stream_id)
        assert [e.stream_id for e in await all_events(store, stream_prefix=stream_id[:5])] == [
            stream_id
        ]

    async def test_an_event_over_the_size_limit_writes_nothing(self, store: EventStore) -> None:
        limit: int = getattr(store, "max_event_size")  # noqa: B009 - part of EventStoreBase, not the protocol
        big = MoneyDeposited(amount=1, note="x" * limit)
        with pytest.raises(EventTooLarge) as info:
            await store.append("s", [MoneyDeposited(amount=0), big])
        assert info.value.limit == limit
        assert info.value.size > limit
        assert await store.read_stream("s") == []

    async def test_an_unregistered_event_writes_nothing(self, store: EventStore) -> None:
        with pytest.raises(UnregisteredEvent):
            await store.append("s", [MoneyDeposited(amount=1), Unregistered()])
        assert await store.read_stream("s") == []

    async def test_bad_expected_versions_are_rejected(self, store: EventStore) -> None:
        for bad in (-1, "1", 1.0, True, None):
            with pytest.raises(ValueError):
                await store.append("s", deposits(1), expected_version=bad)  # type: ignore[arg-type]
        assert await all_events(store) == []

    # -- subscriptions ---------------------------------------------------------

    async def test_subscription_catches_up_then_follows_live(self, store: EventStore) -> None:
        await store.append("s", deposits(3))
        first = (await store.read_stream("s"))[0]
        seen: list[RecordedEvent[Event]] = []
        async with store.subscribe(after=first.global_position) as subscription:
            with anyio.fail_after(20):
                async for event in subscription:
                    seen.append(event)
                    if len(seen) == 2:
                        await store.append("t", deposits(2, 100))
                    if len(seen) == 4:
                        break
        assert [(e.stream_id, e.stream_version) for e in seen] == [
            ("s", 2),
            ("s", 3),
            ("t", 1),
            ("t", 2),
        ]

    async def test_closing_a_subscription_ends_a_waiting_iteration(self, store: EventStore) -> None:
        subscription = store.subscribe()
        ended = anyio.Event()

        async def consume() -> None:
            async for _ in subscription:
                pass
            ended.set()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(consume)
                await anyio.sleep(0.05)
                await subscription.aclose()
                await ended.wait()

    # -- concurrency -----------------------------------------------------------

    async def test_concurrent_appends_with_any_get_dense_versions(self, store: EventStore) -> None:
        async with anyio.create_task_group() as tasks:
            for n in range(20):
                tasks.start_soon(store.append, "busy", deposits(2, n * 10))
        events = await store.read_stream("busy")
        assert [e.stream_version for e in events] == list(range(1, 41))
        assert sorted(e.data.amount for e in events) == sorted(  # type: ignore[attr-defined]
            n * 10 + k for n in range(20) for k in (0, 1)
        )

    async def test_concurrent_appends_at_one_version_let_exactly_one_win(
        self, store: EventStore
    ) -> None:
        await store.append("race", deposits(1))
        outcomes: list[str] = []

        async def contend(n: int) -> None:
            try:
                await store.append("race", deposits(1, n), expected_version=1)
                outcomes.append("won")
            except WrongExpectedVersion as error:
                assert error.actual == 2
                outcomes.append("lost")

        async with anyio.create_task_group() as tasks:
            for n in range(10):
                tasks.start_soon(contend, n)
        assert sorted(outcomes) == ["lost"] * 9 + ["won"]
        assert await store.stream_version("race") == 2

    async def test_writers_and_subscribers_agree_on_the_log(self, store: EventStore) -> None:
        report = await run_concurrent_writers(store, writers=16, appends_per_writer=10, seed=1)
        report.check()
