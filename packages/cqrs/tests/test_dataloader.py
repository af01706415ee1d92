"""DataLoader coalesces the loads of one request into few batch calls, and memoizes them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uno.cqrs._dataloader import BatchLoadMismatch, DataLoader, LoaderKeyMissing

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Users:
    """A fake read model that records every batch it is asked for."""

    def __init__(self, known: Mapping[int, str] | None = None) -> None:
        self.known = dict(known) if known is not None else {n: f"user-{n}" for n in range(1000)}
        self.calls: list[list[int]] = []

    async def by_ids(self, ids: list[int]) -> list[str | None]:
        self.calls.append(list(ids))
        await anyio.lowlevel.checkpoint()
        return [self.known.get(n) for n in ids]

    async def as_mapping(self, ids: list[int]) -> dict[int, str]:
        self.calls.append(list(ids))
        return {n: self.known[n] for n in ids if n in self.known}


async def test_one_hundred_concurrent_loads_make_one_batch_call() -> None:
    users = Users()
    loader = DataLoader(users.by_ids)
    results: dict[int, str | None] = {}

    async def resolve(n: int) -> None:
        results[n] = await loader.load(n)

    async with anyio.create_task_group() as tasks:
        for n in range(100):
            tasks.start_soon(resolve, n)

    assert len(users.calls) == 1
    assert sorted(users.calls[0]) == list(range(100))
    assert results == {n: f"user-{n}" for n in range(100)}


async def test_max_batch_size_splits_one_dispatch_into_chunks() -> None:
    users = Users()
    loader = DataLoader(users.by_ids, max_batch_size=30)
    async with anyio.create_task_group() as tasks:
        for n in range(100):
            tasks.start_soon(loader.load, n)
    assert sorted(len(call) for call in users.calls) == [10, 30, 30, 30]
    assert sorted(n for call in users.calls for n in call) == list(range(100))


async def test_loads_after_a_pause_of_a_nested_resolver_join_the_same_batch() -> None:
    users = Users()
    loader = DataLoader(users.by_ids)

    async def nested(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        await loader.load(n)

    async with anyio.create_task_group() as tasks:
        for n in range(10):
            tasks.start_soon(nested, n)
    assert len(users.calls) == 1


async def test_the_same_key_loaded_twice_is_fetched_once() -> None:
    users = Users()
    loader = DataLoader(users.by_ids)
    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(loader.load, 7)
    assert await loader.load(7) == "user-7"
    assert users.calls == [[7]]


async def test_without_cache_concurrent_loads_share_a_fetch_but_later_ones_fetch_again() -> None:
    users = Users()
    loader = DataLoader(users.by_ids, cache=False)
    assert await loader.load_many([3, 3]) == ["user-3", "user-3"]
    assert await loader.load(3) == "user-3"
    assert users.calls == [[3], [3]]


async def test_load_many_returns_values_in_key_order_and_batches_with_load() -> None:
    users = Users()
    loader = DataLoader(users.by_ids)
    got: list[list[str | None]] = []

    async def many() -> None:
        got.append(await loader.load_many([5, 1, 3]))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(many)
        tasks.start_soon(loader.load, 9)
    assert got == [["user-5", "user-1", "user-3"]]
    assert len(users.calls) == 1
    assert sorted(users.calls[0]) == [1, 3, 5, 9]


async def test_a_mapping_result_loads_missing_keys_as_none_by_default() -> None:
    users = Users({1: "ada"})
    loader = DataLoader(users.as_mapping)
    assert await loader.load_many([1, 2]) == ["ada", None]


async def test_missing_error_raises_loader_key_missing_for_absent_keys_only() -> None:
    users = Users({1: "ada"})
    loader = DataLoader(users.as_mapping, missing="error", name="users")
    with pytest.raises(LoaderKeyMissing) as caught:
        await loader.load_many([1, 2])
    assert caught.value.key == 2
    assert caught.value.loader == "users"
    assert caught.value.code == "cqrs.loader_key_missing"
    assert await loader.load(1) == "ada"
    assert users.calls == [[1, 2]]


async def test_missing_error_also_applies_to_none_in_a_sequence() -> None:
    users = Users({1: "ada"})
    loader = DataLoader(users.by_ids, missing="error")
    with pytest.raises(LoaderKeyMissing):
        await loader.load(2)


async def test_an_exception_value_fails_only_its_own_key_and_is_not_memoized() -> None:
    calls: list[list[int]] = []

    async def batch(keys: list[int]) -> list[str | Exception]:
        calls.append(keys)
        return [ValueError(f"bad {k}") if k < 0 else str(k) for k in keys]

    loader = DataLoader(batch)
    outcomes: dict[int, object] = {}

    async def resolve(n: int) -> None:
        try:
            outcomes[n] = await loader.load(n)
        except ValueError as exc:
            outcomes[n] = exc

    async with anyio.create_task_group() as tasks:
        for n in (-1, 2):
            tasks.start_soon(resolve, n)
    assert outcomes[2] == "2"
    assert isinstance(outcomes[-1], ValueError)
    with pytest.raises(ValueError, match="bad -1"):
        await loader.load(-1)
    assert await loader.load(2) == "2"
    assert len(calls) == 2
    assert calls[1] == [-1]


async def test_a_failing_batch_fails_every_load_of_it_and_a_retry_fetches_again() -> None:
    attempts: list[list[int]] = []

    async def flaky(keys: list[int]) -> list[int]:
        attempts.append(keys)
        if len(attempts) == 1:
            raise ConnectionError("read model down")
        return [k * 2 for k in keys]

    loader = DataLoader(flaky)
    failures: list[BaseException] = []

    async def resolve(n: int) -> None:
        try:
            await loader.load(n)
        except ConnectionError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tasks:
        for n in range(3):
            tasks.start_soon(resolve, n)
    assert len(failures) == 3
    assert await loader.load_many([0, 1, 2]) == [0, 2, 4]
    assert len(attempts) == 2


async def test_a_sequence_of_the_wrong_length_raises_batch_load_mismatch() -> None:
    async def short(keys: list[int]) -> list[int]:
        return [1]

    loader = DataLoader(short, name="short")
    with pytest.raises(BatchLoadMismatch) as caught:
        await loader.load_many([1, 2, 3])
    assert (caught.value.keys, caught.value.values) == (3, 1)
    assert "returned 1 values for 3 keys" in str(caught.value)


async def test_prime_serves_a_value_without_fetching_and_clear_forgets_it() -> None:
    users = Users()
    loader = DataLoader(users.by_ids)
    loader.prime(1, "primed")
    loader.prime(1, "ignored")
    assert await loader.load(1) == "primed"
    loader.prime(1, "forced", force=True)
    assert await loader.load(1) == "forced"
    assert users.calls == []
    loader.clear(1)
    assert await loader.load(1) == "user-1"
    loader.clear_all()
    assert await loader.load(1) == "user-1"
    assert users.calls == [[1], [1]]


async def test_cache_key_maps_equal_keys_to_one_fetch() -> None:
    seen: list[list[str]] = []

    async def batch(keys: list[str]) -> list[str]:
        seen.append(keys)
        return [k.lower() for k in keys]

    loader = DataLoader(batch, cache_key=str.lower)
    assert await loader.load_many(["Ada", "ADA", "ada"]) == ["ada", "ada", "ada"]
    assert seen == [["Ada"]]


async def test_cancelling_the_task_that_runs_the_batch_lets_the_other_waiters_load() -> None:
    started = anyio.Event()
    release = anyio.Event()
    calls: list[list[int]] = []

    async def slow(keys: list[int]) -> list[int]:
        calls.append(keys)
        if len(calls) == 1:
            started.set()
            await release.wait()
        return keys

    loader = DataLoader(slow, missing="error")
    got: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            leader = anyio.CancelScope()

            async def first() -> None:
                with leader:
                    await loader.load(1)

            async def second() -> None:
                got.append(await loader.load(1))

            tasks.start_soon(first)
            tasks.start_soon(second)
            await started.wait()
            leader.cancel()
    assert got == [1]
    assert len(calls) == 2


def test_invalid_max_batch_size_is_refused() -> None:
    async def batch(keys: list[int]) -> list[int]:
        return keys

    with pytest.raises(ValueError, match="max_batch_size"):
        DataLoader(batch, max_batch_size=0)


_load_pattern = st.lists(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
        min_size=1,
        max_size=12,
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=_load_pattern, max_batch_size=st.integers(min_value=1, max_value=8))
async def test_random_concurrent_loads_get_their_values_in_few_batches(
    rounds: Sequence[Sequence[Sequence[int]]], max_batch_size: int
) -> None:
    """Every load gets its key's value; a dispatch makes ceil(new keys / max) calls at most."""
    calls: list[list[int]] = []

    async def batch(keys: list[int]) -> list[int]:
        calls.append(keys)
        await anyio.lowlevel.checkpoint()
        return [k * 10 + 1 for k in keys]

    loader = DataLoader(batch, max_batch_size=max_batch_size, missing="error")
    fetched: set[int] = set()
    for tasks_of_round in rounds:
        before = len(calls)
        results: list[tuple[list[int], list[int]]] = []

        async def run(keys: Sequence[int], into: list[tuple[list[int], list[int]]]) -> None:
            into.append((list(keys), await loader.load_many(keys)))

        async with anyio.create_task_group() as tasks:
            for keys in tasks_of_round:
                tasks.start_soon(run, keys, results)

        new_keys = {k for keys in tasks_of_round for k in keys} - fetched
        made = calls[before:]
        assert len(made) <= math.ceil(len(new_keys) / max_batch_size)
        assert all(len(call) <= max_batch_size for call in made)
        fetched_now = [k for call in made for k in call]
        assert sorted(fetched_now) == sorted(new_keys)  # each new key once, no known key again
        fetched |= new_keys
        for keys, values in results:
            assert values == [k * 10 + 1 for k in keys]
