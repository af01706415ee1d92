"""Dependency injection: a request scope opened, a four-level chain resolved, the scope closed.

``Top`` takes a ``D1``, which takes a ``D2``, which takes a ``D3``; all four are
request-scoped. Each iteration opens a request scope, resolves ``Top`` (building
the chain) and closes the scope. The async variant makes ``D3`` with an async
generator factory, finalized when the scope closes, through each library's async
API. Contenders: uno.di, dishka, wireup, dependency-injector and hand-written code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import dishka
import wireup
from dependency_injector import containers, providers

from benchmarks._harness import Settings, Timing, compare, machine_facts, markdown_table, verdict
from uno.di import ContainerBuilder, Scope

__all__ = ["D1", "D2", "D3", "Top", "run"]

ITERATIONS = 100_000
SLOW_ITERATIONS = 5_000  # dependency-injector's async case, 50 times slower than the rest
FLOOR_TARGET = 2.0  # uno's time / the hand-written code's time, at most
PEER_TARGET = 1.0  # every peer's time / uno's time, more than this

HAND = "hand-written (floor)"
UNO = "uno.di"
DISHKA = "dishka"
WIREUP = "wireup"
DEPENDENCY_INJECTOR = "dependency-injector"
PEERS = (DISHKA, WIREUP, DEPENDENCY_INJECTOR)


class D3:
    """The leaf."""


class D2:
    def __init__(self, d3: D3) -> None:
        self.d3 = d3


class D1:
    def __init__(self, d2: D2) -> None:
        self.d2 = d2


class Top:
    def __init__(self, d1: D1) -> None:
        self.d1 = d1


class _Finalized:
    """Counts the async generator leaves finalized, to check every contender closes them."""

    count = 0


async def make_d3() -> AsyncIterator[D3]:
    """The async variant's leaf: an async generator factory, finalized at scope exit."""
    yield D3()
    _Finalized.count += 1


Run = Callable[[], object]
"""Performs ``ITERATIONS`` iterations: scope opened, ``Top`` resolved, scope closed."""


@dataclass(frozen=True)
class _Variant:
    title: str
    cases: dict[str, Run]
    one: dict[str, Callable[[], Top]]
    """Each contender's single iteration, returning the ``Top`` it resolved."""
    finalizes: bool
    iterations: dict[str, int]
    """How many iterations each case's run performs, when not ``ITERATIONS``."""


def run(settings: Settings) -> str:
    """Time every contender, sync and async, and return the markdown section of the results."""
    loop = asyncio.new_event_loop()
    try:
        variants = [_sync_variant(), _async_variant(loop)]
        for variant in variants:
            _check(variant)
        timings = [_timings(variant, settings) for variant in variants]
    finally:
        loop.close()
    return _report(variants, timings, settings)


def _timings(variant: _Variant, settings: Settings) -> dict[str, Timing]:
    """Time the variant's contenders in turns; each time is per iteration."""
    timed = compare(variant.cases, ops=ITERATIONS, repeats=settings.repeats)
    per_iteration = {}
    for timing in timed:
        scale = ITERATIONS / variant.iterations.get(timing.label, ITERATIONS)
        per_iteration[timing.label] = Timing(
            label=timing.label,
            median_ns=timing.median_ns * scale,
            min_ns=timing.min_ns * scale,
            max_ns=timing.max_ns * scale,
        )
    return per_iteration


def _check(variant: _Variant) -> None:
    """Raise unless each contender builds the whole chain afresh and finalizes the leaf."""
    for label, one in variant.one.items():
        before = _Finalized.count
        first, second = one(), one()
        if first is second or first.d1.d2.d3 is second.d1.d2.d3:
            raise AssertionError(f"{variant.title}, {label}: the chain was not built per scope")
        finalized = _Finalized.count - before
        if variant.finalizes and finalized != 2:
            raise AssertionError(f"{variant.title}, {label}: {finalized} leaves finalized of 2")


# --- sync: every class request-scoped, no finalizer --------------------------------------


def _sync_variant() -> _Variant:
    contenders: dict[str, tuple[Run, Callable[[], Top]]] = {
        HAND: (_repeat(_hand_sync), _hand_sync),
        UNO: _uno_sync(),
        DISHKA: _dishka_sync(),
        WIREUP: _wireup_sync(),
        DEPENDENCY_INJECTOR: _dependency_injector_sync(),
    }
    return _Variant(
        "Sync",
        {label: run for label, (run, _) in contenders.items()},
        {label: one for label, (_, one) in contenders.items()},
        finalizes=False,
        iterations={},
    )


def _repeat(one: Callable[[], object]) -> Run:
    def iterations() -> None:
        for _ in range(ITERATIONS):
            one()

    return iterations


def _hand_sync() -> Top:
    """Open a trivial scope (a dict cache), build the chain into it, close it."""
    cache: dict[type, object] = {}
    top = cache[Top] = Top(D1(D2(D3())))
    cache.clear()
    return top


def _uno_sync() -> tuple[Run, Callable[[], Top]]:
    builder = ContainerBuilder()
    for cls in (D3, D2, D1, Top):
        builder.add(cls, scope=Scope.REQUEST)
    container = builder.build()
    scope = container.scope

    def one() -> Top:
        with scope() as request:
            return request.get(Top)

    def iterations() -> None:
        for _ in range(ITERATIONS):
            with scope() as request:
                request.get(Top)

    return iterations, one


def _dishka_sync() -> tuple[Run, Callable[[], Top]]:
    provider = dishka.Provider(scope=dishka.Scope.REQUEST)
    for cls in (D3, D2, D1, Top):
        provider.provide(cls)
    container = dishka.make_container(provider)

    def one() -> Top:
        with container() as request:
            return request.get(Top)

    def iterations() -> None:
        for _ in range(ITERATIONS):
            with container() as request:
                request.get(Top)

    return iterations, one


def _wireup_sync() -> tuple[Run, Callable[[], Top]]:
    container = wireup.create_sync_container(
        injectables=[wireup.injectable(cls, lifetime="scoped") for cls in (D3, D2, D1, Top)]
    )
    enter_scope = container.enter_scope

    def one() -> Top:
        with enter_scope() as request:
            return request.get(Top)

    def iterations() -> None:
        for _ in range(ITERATIONS):
            with enter_scope() as request:
                request.get(Top)

    return iterations, one


class _SyncProviders(containers.DeclarativeContainer):
    """dependency-injector has no request scope: ``Factory`` builds each object per call."""

    d3 = providers.Factory(D3)
    d2 = providers.Factory(D2, d3=d3)
    d1 = providers.Factory(D1, d2=d2)
    top = providers.Factory(Top, d1=d1)


def _dependency_injector_sync() -> tuple[Run, Callable[[], Top]]:
    top = _SyncProviders().top

    def one() -> Top:
        return top()

    def iterations() -> None:
        for _ in range(ITERATIONS):
            top()

    return iterations, one


# --- async: D3 from an async generator, finalized at scope exit -------------------------


def _async_variant(loop: asyncio.AbstractEventLoop) -> _Variant:
    contenders: dict[str, Callable[[], Coroutine[Any, Any, Top]]] = {
        HAND: _hand_async,
        UNO: _uno_async(),
        DISHKA: _dishka_async(),
        WIREUP: _wireup_async(),
        DEPENDENCY_INJECTOR: _dependency_injector_async(),
    }
    iterations = {DEPENDENCY_INJECTOR: SLOW_ITERATIONS}
    return _Variant(
        "Async, generator leaf",
        {
            label: _repeat_async(loop, one, iterations.get(label, ITERATIONS))
            for label, one in contenders.items()
        },
        {label: _once(loop, one) for label, one in contenders.items()},
        finalizes=True,
        iterations=iterations,
    )


def _repeat_async(
    loop: asyncio.AbstractEventLoop, one: Callable[[], Coroutine[Any, Any, Top]], count: int
) -> Run:
    async def iterations() -> None:
        for _ in range(count):
            await one()

    return lambda: loop.run_until_complete(iterations())


def _once(
    loop: asyncio.AbstractEventLoop, one: Callable[[], Coroutine[Any, Any, Top]]
) -> Callable[[], Top]:
    return lambda: loop.run_until_complete(one())


async def _hand_async() -> Top:
    """Open a trivial scope, run the leaf's async generator, build the chain, close both."""
    cache: dict[type, object] = {}
    leaf = make_d3()
    top = cache[Top] = Top(D1(D2(await anext(leaf))))
    try:  # noqa: SIM105 - contextlib.suppress would add a context manager to the floor
        await anext(leaf)
    except StopAsyncIteration:
        pass
    cache.clear()
    return top


def _uno_async() -> Callable[[], Coroutine[Any, Any, Top]]:
    builder = ContainerBuilder()
    builder.add(make_d3, scope=Scope.REQUEST)
    for cls in (D2, D1, Top):
        builder.add(cls, scope=Scope.REQUEST)
    scope = builder.build().scope

    async def one() -> Top:
        async with scope() as request:
            return await request.aget(Top)

    return one


def _dishka_async() -> Callable[[], Coroutine[Any, Any, Top]]:
    provider = dishka.Provider(scope=dishka.Scope.REQUEST)
    provider.provide(make_d3)
    for cls in (D2, D1, Top):
        provider.provide(cls)
    container = dishka.make_async_container(provider)

    async def one() -> Top:
        async with container() as request:
            return await request.get(Top)

    return one


def _wireup_async() -> Callable[[], Coroutine[Any, Any, Top]]:
    container = wireup.create_async_container(
        injectables=[
            wireup.injectable(make_d3, lifetime="scoped"),
            *(wireup.injectable(cls, lifetime="scoped") for cls in (D2, D1, Top)),
        ]
    )
    enter_scope = container.enter_scope

    async def one() -> Top:
        async with enter_scope() as request:
            return await request.get(Top)

    return one


class _AsyncProviders(containers.DeclarativeContainer):
    """The leaf is a ``ContextLocalResource``: created once per context, shut down by hand."""

    d3 = providers.ContextLocalResource(make_d3)
    d2 = providers.Factory(D2, d3=d3)
    d1 = providers.Factory(D1, d2=d2)
    top = providers.Factory(Top, d1=d1)


def _dependency_injector_async() -> Callable[[], Coroutine[Any, Any, Top]]:
    wired = _AsyncProviders()
    top, leaf = wired.top, wired.d3

    async def one() -> Top:
        resolved: Top = await top()  # type: ignore[misc]
        await leaf.shutdown()  # type: ignore[misc]
        return resolved

    return one


# --- report -----------------------------------------------------------------------------


def _report(variants: list[_Variant], timings: list[dict[str, Timing]], settings: Settings) -> str:
    rows: list[list[str]] = []
    ratio_rows: list[list[str]] = []
    for variant, timed in zip(variants, timings, strict=True):
        floor, uno = timed[HAND].median_ns, timed[UNO].median_ns
        for number, label in enumerate(variant.cases):
            timing = timed[label]
            rows.append(
                [
                    variant.title if number == 0 else "",
                    label,
                    f"{timing.median_us:.2f}",
                    timing.spread_us(),
                    f"{timing.median_ns / floor:.2f}x",
                ]
            )
        ratio_rows.append(
            [
                f"{variant.title}: uno's time / hand-written's",
                f"{uno / floor:.2f}x",
                f"≤ {FLOOR_TARGET:.0f}x",
                verdict(uno / floor, at_most=FLOOR_TARGET),
            ]
        )
        for peer in PEERS:
            ratio = timed[peer].median_ns / uno
            ratio_rows.append(
                [
                    f"{variant.title}: {peer}'s time / uno's",
                    f"{ratio:.2f}x",
                    f"> {PEER_TARGET:.0f}x",
                    "PASS" if ratio > PEER_TARGET else "MISS",
                ]
            )
    results = markdown_table(
        ["Variant", "Contender", "µs (median)", "µs (min - max)", "vs hand-written"],
        rows,
        align="llrrr",
    )
    ratios = markdown_table(["Comparison", "Ratio", "Target", "Result"], ratio_rows, align="lrrl")
    return f"""\
## Dependency injection

What is measured: one request's worth of dependency injection, {ITERATIONS:,}
times over. Each iteration opens a request scope, resolves `Top`, whose
constructor takes a `D1`, which takes a `D2`, which takes a `D3` (all four
request-scoped, so all four are built), and closes the scope. In the async
variant `D3` comes from an async generator factory (`yield D3()`), which must
be finalized when the scope closes, and every contender goes through its async
API. Each contender is checked before timing: two iterations give two distinct
chains, and in the async variant every leaf is finalized once.

- **uno.di**: `builder.add(cls, scope=Scope.REQUEST)` for each class (and for
  the generator factory), then `with container.scope() as request:
  request.get(Top)`, or `async with container.scope() as request:
  await request.aget(Top)`.
- **dishka**: `Provider(scope=Scope.REQUEST)` with `provide(cls)` for each
  class (and the generator factory), `make_container`/`make_async_container`,
  then `with container() as request: request.get(Top)` (or `async with`,
  `await request.get(Top)`). Validation stays on (its default).
- **wireup**: `injectable(cls, lifetime="scoped")` for each class (and the
  generator factory), `create_sync_container`/`create_async_container`, then
  `with container.enter_scope() as request: request.get(Top)` (or `async with`,
  `await request.get(Top)`).
- **dependency-injector** has no request scope. Sync: a `Factory` per class
  and `container.top()`: no scope is opened or closed and nothing is cached,
  which for this chain (each class used once) builds the same objects; it is
  the cheapest way it has, not the same work. Its per-context caching,
  `ContextLocalSingleton` reset after each iteration, took 10 to 20 times as
  long when tried. Async: `D3` is a `ContextLocalResource` (its per-request resource) over
  the generator, the other three `Factory`; each iteration is
  `await container.top()` then `await container.d3.shutdown()`, which
  finalizes the generator (`container.shutdown_resources()` took more than
  twice as long). `@inject` with a `Closing[Provide[...]]` marker, which
  shuts resources down after each decorated call, needs wiring: not measured.
- **hand-written**: `cache = {{}}`, `cache[Top] = Top(D1(D2(D3())))`,
  `cache.clear()`; async: the same around `await anext(leaf)` on the
  generator, then a second `anext` that finalizes it. The floor.

Each contender runs once to warm up, then {settings.repeats} timed runs of
{ITERATIONS:,} iterations ({SLOW_ITERATIONS:,} for dependency-injector's
async case; every time shown is per iteration), taking turns with the others of
its variant; the garbage collector runs before each timed run. The
async variant runs in one asyncio event loop (the default, not uvloop). The
table gives the median time per iteration and the fastest and slowest run.

{machine_facts(("uno-di", "dishka", "wireup", "dependency-injector"))}

{results}

{ratios}
"""
