"""UUIDv7 event ids: layout, order within a millisecond, uniqueness across threads."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

import pytest

from uno.events import _identifiers, uuid7


def millis(value: UUID) -> int:
    return value.int >> 80


def test_layout_is_rfc_9562_version_7() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"
    assert before <= millis(value) <= after


def test_ids_from_one_thread_strictly_increase() -> None:
    ids = [uuid7() for _ in range(50_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    # Many share a millisecond, so the order inside one comes from the counter.
    assert len({millis(i) for i in ids}) < len(ids)


def test_ids_are_unique_and_each_thread_sees_them_increase() -> None:
    per_thread: dict[int, list[UUID]] = {}
    start = threading.Barrier(8)

    def produce(n: int) -> None:
        start.wait()
        per_thread[n] = [uuid7() for _ in range(20_000)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(produce, range(8)))
    every = [i for ids in per_thread.values() for i in ids]
    assert len(set(every)) == len(every) == 160_000
    for ids in per_thread.values():
        assert ids == sorted(ids)
    # One process-wide sequence: merged in generation order, all ids are totally ordered.
    assert len(sorted(every)) == len(set(every))


def test_order_holds_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uuid7()
    monkeypatch.setattr(time, "time_ns", lambda: (millis(first) - 5_000) * 1_000_000)
    later = [uuid7() for _ in range(100)]
    assert first < later[0]
    assert later == sorted(later)
    assert {millis(i) for i in later} == {millis(first)}


def test_counter_overflow_moves_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = uuid7()
    monkeypatch.setattr(time, "time_ns", lambda: millis(frozen) * 1_000_000)
    monkeypatch.setattr(_identifiers, "_counter", _identifiers._COUNTER_MAX - 1)
    last_in_ms = uuid7()
    next_ms = uuid7()
    assert millis(last_in_ms) == millis(frozen)
    assert millis(next_ms) == millis(frozen) + 1
    assert last_in_ms < next_ms
