"""QueryCache serves each query once per TTL, until a read model it depends on changes.

The contract runs on the in-process backend and on the real Redis (set
``UNO_TEST_REDIS_URL``; with ``CI`` set, an unreachable Redis fails the test).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pydantic
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from uno.cqrs._cache import (
    CacheBackend,
    CacheSerializationFailed,
    CacheUnavailable,
    InMemoryCacheBackend,
    QueryCache,
    QueryCacheNotOpen,
    RedisCacheBackend,
    UncacheableQuery,
    query_cache_key,
)
from uno.cqrs._changes import ReadModelChanges
from uno.event_storage.testing import require_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class BalanceOf(pydantic.BaseModel):
    account: str
    currency: str = "EUR"


class BalanceOfStruct(msgspec.Struct, frozen=True):
    account: str
    currency: str = "EUR"


class Balance(msgspec.Struct):
    account: str
    cents: int


class BalanceModel(pydantic.BaseModel):
    account: str
    cents: int
    at: dt.datetime


class Kind(enum.Enum):
    SAVINGS = "savings"


@dataclass
class Row:
    account: str
    opened: dt.date


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    """A backend and the means to let time pass for it."""

    make_backend: Callable[[], Awaitable[InMemoryCacheBackend | RedisCacheBackend]]
    advance: Callable[[float], Awaitable[None]]


def redis_url() -> str:
    url = os.environ.get("UNO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    require_service(url, "redis")
    return url


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    url = redis_url()
    prefix = f"uno-test-qc-{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(url) as client:
        names = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if names:
            client.delete(*names)


@pytest.fixture(params=["memory", "redis"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    if request.param == "memory":
        clock = Clock()

        async def memory() -> InMemoryCacheBackend:
            return InMemoryCacheBackend(clock=clock)

        async def tick(seconds: float) -> None:
            clock.now += seconds

        yield Setup(memory, tick)
        return
    prefix: str = request.getfixturevalue("redis_prefix")
    backends: list[RedisCacheBackend] = []

    async def redis() -> RedisCacheBackend:
        backend = RedisCacheBackend.from_url(redis_url(), prefix=prefix)
        backends.append(backend)
        return backend

    async def wait(seconds: float) -> None:
        await anyio.sleep(seconds + 0.2)

    try:
        yield Setup(redis, wait)
    finally:
        for backend in backends:
            await backend.aclose()


class ReadCounting:
    """A backend that counts its completed reads: a miss waits on a flight right after one."""

    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend
        self.reads = 0
        self._waiting: list[tuple[int, anyio.Event]] = []

    async def read(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[str]]:
        found = await self.backend.read(key, tags)
        self.reads += 1
        for count, event in self._waiting:
            if self.reads >= count:
                event.set()
        return found

    async def reached(self, count: int) -> None:
        """Return once ``count`` reads have completed (fail after a generous timeout)."""
        event = anyio.Event()
        self._waiting.append((count, event))
        if self.reads >= count:
            event.set()
        with anyio.fail_after(10):
            await event.wait()

    async def write(
        self, key: str, entry: bytes, *, tags: Sequence[str], generations: Sequence[str], ttl: float
    ) -> bool:
        return await self.backend.write(key, entry, tags=tags, generations=generations, ttl=ttl)

    async def invalidate(self, tags: Iterable[str]) -> None:
        await self.backend.invalidate(tags)

    async def clear(self) -> None:
        await self.backend.clear()


class Ledger:
    """A fake read model: balances, and how often a query computed from it."""

    def __init__(self) -> None:
        self.cents: dict[str, int] = {"a-1": 100, "a-2": 200}
        self.loads = 0

    async def balance(self, account: str) -> Balance:
        self.loads += 1
        await anyio.lowlevel.checkpoint()
        return Balance(account, self.cents[account])


async def test_a_second_equal_query_is_served_from_the_cache(setup: Setup) -> None:
    ledger = Ledger()
    async with QueryCache(await setup.make_backend()) as cache:
        for _ in range(3):
            got = await cache.get_or_load(
                BalanceOf(account="a-1"),
                lambda: ledger.balance("a-1"),
                result_type=Balance,
                depends_on=["balances"],
            )
            assert got == Balance("a-1", 100)
    assert ledger.loads == 1


async def test_queries_that_differ_in_a_field_or_in_type_have_their_own_entries(
    setup: Setup,
) -> None:
    ledger = Ledger()
    async with QueryCache(await setup.make_backend()) as cache:
        for query in (
            BalanceOf(account="a-1"),
            BalanceOf(account="a-1", currency="USD"),
            BalanceOfStruct(account="a-1"),
        ):
            await cache.get_or_load(
                query, lambda: ledger.balance("a-1"), result_type=Balance, depends_on=["balances"]
            )
    assert ledger.loads == 3


async def test_a_change_of_a_dependency_invalidates_and_others_do_not(setup: Setup) -> None:
    changes = ReadModelChanges()
    ledger = Ledger()
    async with QueryCache(await setup.make_backend(), changes=changes) as cache:

        async def balance() -> Balance:
            return await cache.get_or_load(
                BalanceOf(account="a-1"),
                lambda: ledger.balance("a-1"),
                result_type=Balance,
                depends_on=["balances", "accounts"],
            )

        assert (await balance()).cents == 100
        changes.changed("customers")
        ledger.cents["a-1"] = 999
        assert (await balance()).cents == 100
        changes.changed("accounts")
        assert (await balance()).cents == 999
        assert (await balance()).cents == 999
    assert ledger.loads == 2


async def test_invalidate_drops_the_entries_of_a_read_model(setup: Setup) -> None:
    ledger = Ledger()
    async with QueryCache(await setup.make_backend()) as cache:
        query = BalanceOf(account="a-2")
        await cache.get_or_load(query, lambda: ledger.balance("a-2"), depends_on=["balances"])
        await cache.invalidate("balances")
        await cache.get_or_load(query, lambda: ledger.balance("a-2"), depends_on=["balances"])
    assert ledger.loads == 2


async def test_an_entry_is_recomputed_after_its_ttl(setup: Setup) -> None:
    ledger = Ledger()
    async with QueryCache(await setup.make_backend(), default_ttl=0.3) as cache:

        async def balance() -> object:
            return await cache.get_or_load(
                BalanceOf(account="a-1"), lambda: ledger.balance("a-1"), depends_on=["balances"]
            )

        await balance()
        await balance()
        assert ledger.loads == 1
        await setup.advance(0.3)
        await balance()
        assert ledger.loads == 2


async def test_concurrent_misses_of_one_query_compute_once(setup: Setup) -> None:
    ledger = Ledger()
    results: list[Balance] = []
    backend = ReadCounting(await setup.make_backend())
    async with QueryCache(backend) as cache:

        async def once_all_have_missed() -> Balance:
            await backend.reached(20)
            return await ledger.balance("a-1")

        async def ask() -> None:
            results.append(
                await cache.get_or_load(
                    BalanceOf(account="a-1"),
                    once_all_have_missed,
                    result_type=Balance,
                    depends_on=["balances"],
                )
            )

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(ask)
    assert ledger.loads == 1
    assert results == [Balance("a-1", 100)] * 20
    assert len({id(result) for result in results}) == 20  # each caller has its own copy


async def test_a_failing_loader_fails_its_waiters_and_caches_nothing(setup: Setup) -> None:
    attempts = 0
    release = anyio.Event()

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await release.wait()
            raise ConnectionError("read model down")
        return 7

    failures: list[BaseException] = []
    backend = ReadCounting(await setup.make_backend())
    async with QueryCache(backend) as cache:
        query = BalanceOf(account="a-1")

        async def ask() -> None:
            try:
                await cache.get_or_load(query, flaky, depends_on=["balances"])
            except ConnectionError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tasks:
            for _ in range(3):
                tasks.start_soon(ask)
            await backend.reached(3)  # a miss that has read joins the flight at once
            release.set()
        assert len(failures) == 3
        assert attempts == 1
        assert await cache.get_or_load(query, flaky, depends_on=["balances"]) == 7
    assert attempts == 2


async def test_a_change_during_a_computation_leaves_no_stale_entry(setup: Setup) -> None:
    """The value computed before the change answers that call only; later calls recompute."""
    changes = ReadModelChanges()
    ledger = Ledger()
    async with QueryCache(await setup.make_backend(), changes=changes) as cache:
        query = BalanceOf(account="a-1")

        async def racing() -> Balance:
            read = await ledger.balance("a-1")
            ledger.cents["a-1"] = 555  # a write commits after the loader read its data...
            changes.changed("balances")  # ...and its repository reports it
            return read

        first = await cache.get_or_load(query, racing, result_type=Balance, depends_on=["balances"])
        assert first.cents == 100
        again = await cache.get_or_load(
            query, lambda: ledger.balance("a-1"), result_type=Balance, depends_on=["balances"]
        )
        assert again.cents == 555
    assert ledger.loads == 2


async def test_a_miss_after_a_change_does_not_join_a_computation_begun_before(
    setup: Setup,
) -> None:
    changes = ReadModelChanges()
    ledger = Ledger()
    started = anyio.Event()
    release = anyio.Event()

    async def slow_old_read() -> Balance:
        read = await ledger.balance("a-1")
        started.set()
        await release.wait()
        return read

    late: list[Balance] = []
    async with QueryCache(await setup.make_backend(), changes=changes) as cache:
        query = BalanceOf(account="a-1")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                lambda: cache.get_or_load(
                    query, slow_old_read, result_type=Balance, depends_on=["balances"]
                )
            )
            await started.wait()
            ledger.cents["a-1"] = 321
            changes.changed("balances")

            async def late_reader() -> None:
                late.append(
                    await cache.get_or_load(
                        query,
                        lambda: ledger.balance("a-1"),
                        result_type=Balance,
                        depends_on=["balances"],
                    )
                )

            with anyio.fail_after(10):
                await late_reader()
            release.set()
        assert late == [Balance("a-1", 321)]
        final = await cache.get_or_load(
            query, lambda: ledger.balance("a-1"), result_type=Balance, depends_on=["balances"]
        )
        assert final.cents == 321
    assert ledger.loads == 2


async def test_cancelling_the_computing_caller_lets_a_waiter_compute(setup: Setup) -> None:
    calls = 0
    started = anyio.Event()

    async def loader() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await anyio.sleep_forever()
        return 42

    got: list[int] = []
    backend = ReadCounting(await setup.make_backend())
    async with QueryCache(backend) as cache:
        query = BalanceOf(account="a-1")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                first = anyio.CancelScope()

                async def computing() -> None:
                    with first:
                        await cache.get_or_load(query, loader, depends_on=["balances"])

                async def waiting() -> None:
                    got.append(await cache.get_or_load(query, loader, depends_on=["balances"]))

                tasks.start_soon(computing)
                await started.wait()
                tasks.start_soon(waiting)
                await backend.reached(2)  # the waiter has missed and joined the computation
                first.cancel()
    assert got == [42]
    assert calls == 2


async def test_results_round_trip_as_their_result_type(setup: Setup) -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    values: list[tuple[object, Any]] = [
        (Balance("a-1", 1), Balance),
        ([Balance("a-1", 1), Balance("a-2", 2)], list[Balance]),
        (BalanceModel(account="a-1", cents=5, at=at), BalanceModel),
        ({"id": uuid.UUID(int=7), "total": decimal.Decimal("1.10")}, dict[str, Any]),
        (
            (uuid.UUID(int=7), decimal.Decimal("1.10"), at),
            tuple[uuid.UUID, decimal.Decimal, dt.datetime],
        ),
        (Row("a-1", dt.date(2026, 1, 2)), Row),
        ((Kind.SAVINGS, dt.timedelta(seconds=90), {3, 1}), tuple[Kind, dt.timedelta, set[int]]),
        (None, Balance | None),
    ]
    async with QueryCache(await setup.make_backend()) as cache:
        for index, (value, kind) in enumerate(values):
            query = BalanceOf(account=f"type-{index}")

            async def load(value: object = value) -> object:
                return value

            for _ in range(2):  # the miss and the hit
                got = await cache.get_or_load(query, load, result_type=kind, depends_on=["x"])
                if kind == dict[str, Any]:
                    assert got == {"id": str(uuid.UUID(int=7)), "total": "1.10"}
                else:
                    assert got == value


async def test_without_result_type_a_struct_comes_back_as_builtins_on_miss_and_hit(
    setup: Setup,
) -> None:
    ledger = Ledger()
    async with QueryCache(await setup.make_backend()) as cache:
        for _ in range(2):
            got = await cache.get_or_load(
                BalanceOf(account="a-1"), lambda: ledger.balance("a-1"), depends_on=["balances"]
            )
            assert got == {"account": "a-1", "cents": 100}


async def test_a_result_that_does_not_encode_raises_and_caches_nothing(setup: Setup) -> None:
    async def unencodable() -> object:
        return object()

    async with QueryCache(await setup.make_backend()) as cache:
        with pytest.raises(CacheSerializationFailed) as caught:
            await cache.get_or_load(BalanceOf(account="a-1"), unencodable, depends_on=["x"])
    assert caught.value.code == "cqrs.cache_serialization_failed"
    assert "test_query_cache.BalanceOf" in caught.value.query_type


async def test_a_query_that_is_not_a_model_or_struct_is_refused(setup: Setup) -> None:
    async def load() -> int:
        return 1

    async with QueryCache(await setup.make_backend()) as cache:
        with pytest.raises(UncacheableQuery) as caught:
            await cache.get_or_load({"account": "a-1"}, load, depends_on=["x"])
    assert caught.value.code == "cqrs.uncacheable_query"
    assert "pydantic models or msgspec structs" in str(caught.value)


async def test_using_a_cache_outside_its_async_with_is_an_error() -> None:
    async def load() -> int:
        return 1

    cache = QueryCache(InMemoryCacheBackend())
    with pytest.raises(QueryCacheNotOpen, match="async with"):
        await cache.get_or_load(BalanceOf(account="a-1"), load, depends_on=["x"])


async def test_the_in_memory_backend_evicts_the_least_recently_used_entry() -> None:
    ledger = Ledger()
    backend = InMemoryCacheBackend(max_entries=2)
    async with QueryCache(backend) as cache:

        async def ask(account: str) -> None:
            await cache.get_or_load(
                BalanceOf(account=account), lambda: ledger.balance("a-1"), depends_on=["b"]
            )

        await ask("one")
        await ask("two")
        await ask("one")  # "two" is now the least recently used
        await ask("three")
        assert len(backend) == 2
        assert ledger.loads == 3
        await ask("one")
        assert ledger.loads == 3
        await ask("two")
        assert ledger.loads == 4


def test_a_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        QueryCache(InMemoryCacheBackend(), default_ttl=0)


class Filters(pydantic.BaseModel):
    tags: dict[str, int]
    ids: frozenset[int]


@settings(max_examples=100, deadline=None)
@given(
    tags=st.dictionaries(st.text(max_size=5), st.integers(), max_size=6),
    ids=st.frozensets(st.integers(), max_size=6),
)
def test_equal_queries_have_one_key_whatever_the_order_of_their_items(
    tags: dict[str, int], ids: frozenset[int]
) -> None:
    reordered = dict(reversed(list(tags.items())))
    one, other = Filters(tags=tags, ids=ids), Filters(tags=reordered, ids=frozenset(list(ids)))
    assert query_cache_key(one) == query_cache_key(other)
    assert query_cache_key(one).startswith(f"{Filters.__module__}.Filters:")
    changed = Filters(tags={**tags, "\x00new": 1}, ids=ids)
    assert query_cache_key(changed) != query_cache_key(one)


_operations = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.sampled_from(["q1", "q2", "q3"])),
        st.tuples(st.just("change"), st.sampled_from(["left", "right"])),
        st.tuples(st.just("tick"), st.sampled_from([1.0, 5.0, 11.0])),
    ),
    max_size=40,
)
_DEPENDS = {"q1": ["left"], "q2": ["right"], "q3": ["left", "right"]}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=_operations)
async def test_a_cached_answer_always_reflects_every_reported_change(
    operations: list[tuple[str, object]],
) -> None:
    """Random gets, changes and time: each answer equals a fresh computation; TTL bounds reuse."""
    clock = Clock()
    changes = ReadModelChanges()
    versions = {"left": 0, "right": 0}
    loads: list[str] = []
    async with QueryCache(
        InMemoryCacheBackend(clock=clock), changes=changes, default_ttl=10.0
    ) as cache:
        cached_since: dict[str, float] = {}
        for operation, argument in operations:
            if operation == "change":
                assert isinstance(argument, str)
                versions[argument] += 1
                changes.changed(argument)
            elif operation == "tick":
                assert isinstance(argument, float)
                clock.now += argument
            else:
                assert isinstance(argument, str)
                name = argument

                async def compute(name: str = name) -> list[int]:
                    loads.append(name)
                    return [versions[tag] for tag in _DEPENDS[name]]

                before = len(loads)
                got = await cache.get_or_load(
                    BalanceOf(account=name),
                    compute,
                    result_type=list[int],
                    depends_on=_DEPENDS[name],
                )
                assert got == [versions[tag] for tag in _DEPENDS[name]]
                if len(loads) > before:
                    cached_since[name] = clock.now
                else:
                    assert clock.now - cached_since[name] < 10.0


async def test_two_processes_share_entries_and_see_each_others_changes(
    redis_prefix: str,
) -> None:
    """Two caches on separate Redis connections stand in for two processes of one service."""
    url = redis_url()
    ledger = Ledger()
    here_changes, there_changes = ReadModelChanges(), ReadModelChanges()
    async with (
        RedisCacheBackend.from_url(url, prefix=redis_prefix) as here_backend,
        RedisCacheBackend.from_url(url, prefix=redis_prefix) as there_backend,
        QueryCache(here_backend, changes=here_changes) as here,
        QueryCache(there_backend, changes=there_changes, read_models=["balances"]) as there,
    ):
        query = BalanceOf(account="a-1")

        async def ask(cache: QueryCache) -> Balance:
            return await cache.get_or_load(
                query, lambda: ledger.balance("a-1"), result_type=Balance, depends_on=["balances"]
            )

        assert (await ask(here)).cents == 100
        assert (await ask(there)).cents == 100
        assert ledger.loads == 1  # the second process was served from the shared entry

        ledger.cents["a-1"] = 700
        there_changes.changed("balances")  # written and reported in the other process
        with anyio.fail_after(10):
            # The other process sends its invalidation in the background: poll for its effect.
            while (await ask(here)).cents != 700:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert ledger.loads == 2
        assert (await ask(there)).cents == 700
        assert ledger.loads == 2


async def test_a_lost_generation_key_cannot_revive_an_old_entry(redis_prefix: str) -> None:
    url = redis_url()
    ledger = Ledger()
    async with (
        RedisCacheBackend.from_url(url, prefix=redis_prefix) as backend,
        QueryCache(backend) as cache,
    ):
        query = BalanceOf(account="a-1")

        async def ask() -> object:
            return await cache.get_or_load(
                query, lambda: ledger.balance("a-1"), depends_on=["balances"]
            )

        await ask()
        client = Redis.from_url(url)
        try:
            assert await client.delete(f"{{{redis_prefix}}}:g:balances") == 1  # evicted
        finally:
            await client.aclose()
        await ask()
    assert ledger.loads == 2


async def test_redis_entries_expire_by_redis_ttl(redis_prefix: str) -> None:
    url = redis_url()
    async with (
        RedisCacheBackend.from_url(url, prefix=redis_prefix) as backend,
        QueryCache(backend) as cache,
    ):

        async def load() -> int:
            return 1

        query = BalanceOf(account="a-1")
        await cache.get_or_load(query, load, depends_on=["balances"], ttl=30)
        client = Redis.from_url(url)
        try:
            ttl_ms = await client.pttl(f"{{{redis_prefix}}}:e:{query_cache_key(query)}")
        finally:
            await client.aclose()
        assert 0 < ttl_ms <= 30_000


async def test_an_unreachable_redis_raises_cache_unavailable() -> None:
    async def load() -> int:
        return 1

    # Port 1 on the loopback refuses connections at once.
    async with (
        RedisCacheBackend.from_url("redis://127.0.0.1:1/0", prefix="down") as backend,
        QueryCache(backend) as cache,
    ):
        with pytest.raises(CacheUnavailable) as caught:
            await cache.get_or_load(BalanceOf(account="a-1"), load, depends_on=["x"])
    assert caught.value.code == "cqrs.cache_unavailable"
    assert "Check that Redis is up" in str(caught.value)


async def test_a_backend_refuses_a_write_under_an_old_generation(setup: Setup) -> None:
    backend = await setup.make_backend()
    _, before = await backend.read("k", ["left", "right"])
    assert await backend.write("k", b"one", tags=["left", "right"], generations=before, ttl=30)
    await backend.invalidate(["right"])
    entry, after = await backend.read("k", ["left", "right"])
    assert entry == b"one"  # still stored: the QueryCache compares its generations
    assert after[0] == before[0]
    assert after[1] != before[1]
    refused = await backend.write("k", b"two", tags=["left", "right"], generations=before, ttl=30)
    assert not refused
    assert (await backend.read("k", ["left", "right"]))[0] == b"one"
    await backend.clear()
    entry, cleared = await backend.read("k", ["left", "right"])
    assert entry is None
    assert not set(cleared) & {*before, *after}  # a cleared tag never takes an old generation


def test_the_cache_imports_without_redis_and_from_url_says_what_to_install() -> None:
    script = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "from uno.cqrs._cache import QueryCache, RedisCacheBackend\n"
        "try:\n"
        "    RedisCacheBackend.from_url('redis://localhost', prefix='p')\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'uno-cqrs[redis]'" in done.stdout


class DownForInvalidations(InMemoryCacheBackend):
    """An in-process backend whose invalidations fail while ``down`` is set."""

    down = True

    async def invalidate(self, tags: Iterable[str]) -> None:
        if self.down:
            raise CacheUnavailable("a test backend", "down")
        await super().invalidate(tags)


async def test_a_change_the_backend_could_not_take_stays_pending_and_nothing_stale_is_served() -> (
    None
):
    changes = ReadModelChanges()
    ledger = Ledger()
    backend = DownForInvalidations()
    backend.down = False
    async with QueryCache(backend, changes=changes) as cache:
        query = BalanceOf(account="a-1")

        async def ask() -> Balance:
            return await cache.get_or_load(
                query, lambda: ledger.balance("a-1"), result_type=Balance, depends_on=["balances"]
            )

        assert (await ask()).cents == 100
        backend.down = True
        ledger.cents["a-1"] = 42
        changes.changed("balances")
        with pytest.raises(CacheUnavailable):
            await ask()  # the cached 100 is not served while the change cannot be recorded
        backend.down = False
        assert (await ask()).cents == 42
    assert ledger.loads == 2
