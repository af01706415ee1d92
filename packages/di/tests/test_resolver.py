"""Scopes: lifetimes, context values, finalization order and errors, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.di import ContainerBuilder, FinalizationError, Scope
from uno.di.exceptions import (
    AsyncResolutionRequired,
    AsyncScopeRequired,
    MissingContextValue,
    ScopeClosed,
    ScopeNestingError,
    ScopeNotActive,
)


class Config:
    pass


class Session:
    pass


class Handler:
    def __init__(self, config: Config, session: Session) -> None:
        self.config = config
        self.session = session


class Token:
    pass


class HttpRequest:
    def __init__(self, path: str) -> None:
        self.path = path


class CurrentUser:
    def __init__(self, request: HttpRequest) -> None:
        self.name = request.path.strip("/")


def lifetimes() -> ContainerBuilder:
    builder = ContainerBuilder()
    builder.add(Config, scope=Scope.APP)
    builder.add(Session, scope=Scope.REQUEST)
    builder.add(Handler, scope=Scope.TRANSIENT)
    return builder


def test_app_services_are_shared_request_services_per_scope_and_transients_per_injection() -> None:
    container = lifetimes().build()
    with container.scope() as first, container.scope() as second:
        assert first.get(Config) is second.get(Config) is container.get(Config)
        assert first.get(Session) is first.get(Session)
        assert first.get(Session) is not second.get(Session)
        assert first.get(Handler) is not first.get(Handler)
        assert first.get(Handler).session is first.get(Session)


def test_a_request_service_asked_for_outside_a_request_scope_says_which_scope_to_open() -> None:
    container = lifetimes().build()
    with pytest.raises(ScopeNotActive) as caught:
        container.get(Session)
    assert caught.value.code == "di.scope_not_active"
    assert "with container.scope(Scope.REQUEST)" in str(caught.value)


def test_a_custom_scope_nests_inside_the_request_and_caches_its_own_services() -> None:
    step = Scope("step", depth=2)
    builder = lifetimes()
    builder.add(Token, scope=step)
    container = builder.build()
    with container.scope() as request:
        with request.scope(step) as one, request.scope(step) as two:
            assert (one.kind, request.kind, container.kind) == (step, Scope.REQUEST, Scope.APP)
            assert one.get(Token) is one.get(Token)
            assert one.get(Token) is not two.get(Token)
            assert one.get(Session) is two.get(Session) is request.get(Session)
        with pytest.raises(ScopeNotActive):
            request.get(Token)


def test_a_scope_cannot_open_inside_one_that_is_as_deep() -> None:
    container = lifetimes().build()
    with container.scope() as request, pytest.raises(ScopeNestingError) as caught:
        request.scope(Scope.REQUEST)
    assert caught.value.code == "di.invalid_scope_nesting"


def test_context_values_given_when_a_scope_opens_are_injected() -> None:
    builder = ContainerBuilder()
    builder.add_context(HttpRequest)
    builder.add(CurrentUser, scope=Scope.REQUEST)
    container = builder.build()
    with container.scope(context={HttpRequest: HttpRequest("/ada")}) as scope:
        assert scope.get(CurrentUser).name == "ada"
    with container.scope() as scope, pytest.raises(MissingContextValue) as caught:
        scope.get(CurrentUser)
    assert caught.value.code == "di.missing_context_value"


def test_a_closed_scope_refuses_to_resolve() -> None:
    container = lifetimes().build()
    with container.scope() as scope:
        scope.get(Session)
    with pytest.raises(ScopeClosed) as caught:
        scope.get(Session)
    assert caught.value.code == "di.scope_closed"


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []


def resource(name: str, kind: type) -> Callable[..., Iterator[object]]:
    def open_resource(log: Log) -> Iterator[object]:
        log.lines.append(f"open {name}")
        try:
            yield kind()
        except Exception as error:
            log.lines.append(f"{name} saw {error!r}")
            raise
        finally:
            log.lines.append(f"close {name}")

    open_resource.__annotations__["return"] = Iterator[kind]  # type: ignore[valid-type]
    return open_resource


class First:
    pass


class Second:
    def __init__(self, first: First) -> None:
        self.first = first


def resources(log: Log) -> ContainerBuilder:
    builder = ContainerBuilder()
    builder.add_instance(log)
    builder.add(resource("first", First), provides=First, scope=Scope.REQUEST)

    def open_second(first: First, log: Log) -> Iterator[Second]:
        log.lines.append("open second")
        yield Second(first)
        log.lines.append("close second")

    builder.add(open_second, scope=Scope.REQUEST)
    return builder


def test_generator_factories_are_finalized_at_scope_exit_in_reverse_creation_order() -> None:
    log = Log()
    container = resources(log).build()
    with container.scope() as scope:
        scope.get(Second)
        assert log.lines == ["open first", "open second"]
    assert log.lines == ["open first", "open second", "close second", "close first"]


def test_an_exception_leaving_the_scope_is_thrown_into_generator_factories() -> None:
    log = Log()
    container = resources(log).build()
    with pytest.raises(ValueError, match="boom"), container.scope() as scope:
        scope.get(First)
        raise ValueError("boom")
    assert log.lines == ["open first", "first saw ValueError('boom')", "close first"]


def failing(name: str) -> Callable[[], Iterator[object]]:
    def open_failing() -> Iterator[object]:
        yield object()
        raise RuntimeError(f"{name} failed")

    return open_failing


class Third:
    pass


def test_every_finalizer_runs_and_all_their_errors_are_reported_together() -> None:
    log = Log()
    builder = resources(log)
    builder.add(failing("a"), provides=Config, scope=Scope.REQUEST)
    builder.add(failing("b"), provides=Third, scope=Scope.REQUEST)
    container = builder.build()
    with pytest.raises(FinalizationError) as caught, container.scope() as scope:
        scope.get(Config)
        scope.get(Second)
        scope.get(Third)
    assert caught.value.code == "di.finalization_failed"
    assert [str(e) for e in caught.value.exceptions] == ["b failed", "a failed"]
    assert log.lines[-2:] == ["close second", "close first"]


async def open_async_session() -> AsyncIterator[Session]:
    yield Session()


def test_asking_synchronously_for_an_async_built_service_says_to_use_aget() -> None:
    builder = ContainerBuilder()
    builder.add(open_async_session, scope=Scope.REQUEST)
    builder.add(Handler, scope=Scope.REQUEST)
    builder.add(Config, scope=Scope.APP)
    container = builder.build()
    with container.scope() as scope, pytest.raises(AsyncResolutionRequired) as caught:
        scope.get(Handler)
    assert caught.value.code == "di.async_required"
    assert "Use `await scope.aget(...)`" in str(caught.value)


@pytest.mark.anyio
async def test_async_generator_factories_are_finalized_by_async_with_and_refused_by_with() -> None:
    log = Log()

    async def open_session(log: Log) -> AsyncIterator[Session]:
        log.lines.append("open")
        yield Session()
        log.lines.append("close")

    builder = ContainerBuilder()
    builder.add_instance(log)
    builder.add(open_session, scope=Scope.REQUEST)
    container = builder.build()
    async with container.scope() as scope:
        assert await scope.aget(Session) is await scope.aget(Session)
    assert log.lines == ["open", "close"]
    with pytest.raises(FinalizationError) as caught, container.scope() as scope:
        await scope.aget(Session)
    assert isinstance(caught.value.exceptions[0], AsyncScopeRequired)


@pytest.mark.anyio
async def test_an_exception_leaving_an_async_scope_is_thrown_into_async_generators() -> None:
    seen: list[str] = []

    async def open_session() -> AsyncIterator[Session]:
        try:
            yield Session()
        except LookupError as error:
            seen.append(f"rolled back after {error!r}")
            raise

    builder = ContainerBuilder()
    builder.add(open_session, scope=Scope.REQUEST)
    container = builder.build()
    with pytest.raises(LookupError):
        async with container.scope() as scope:
            await scope.aget(Session)
            raise LookupError("gone")
    assert seen == ["rolled back after LookupError('gone')"]


@pytest.mark.anyio
async def test_aget_resolves_sync_only_graphs_too() -> None:
    container = lifetimes().build()
    async with container.scope() as scope:
        handler = await scope.aget(Handler)
        assert handler.session is await scope.aget(Session)


Order = st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=20)


@settings(max_examples=50, deadline=None)
@given(Order)
def test_finalization_runs_in_exactly_the_reverse_of_creation_order(order: list[int]) -> None:
    log = Log()
    services = [type(f"S{i}", (), {}) for i in range(8)]
    builder = ContainerBuilder()
    for index, service in enumerate(services):

        def open_service(index: int = index, service: type = service) -> Iterator[object]:
            log.lines.append(f"open {index}")
            yield service()
            log.lines.append(f"close {index}")

        builder.add(open_service, provides=service, scope=Scope.REQUEST)
    container = builder.build()
    with container.scope() as scope:
        for index in order:
            scope.get(services[index])
    opened = [line.split()[1] for line in log.lines if line.startswith("open")]
    closed = [line.split()[1] for line in log.lines if line.startswith("close")]
    assert opened == list(dict.fromkeys(str(i) for i in order))
    assert closed == opened[::-1]


@pytest.mark.anyio
async def test_a_lone_async_generator_that_fails_or_yields_twice_is_reported_at_async_exit() -> (
    None
):
    async def open_failing() -> AsyncIterator[Session]:
        yield Session()
        raise RuntimeError("could not close the session")

    async def open_twice() -> AsyncIterator[Config]:
        yield Config()
        yield Config()

    builder = ContainerBuilder()
    builder.add(open_failing, scope=Scope.REQUEST)
    builder.add(open_twice, scope=Scope.REQUEST)
    container = builder.build()
    with pytest.raises(FinalizationError) as caught:
        async with container.scope() as scope:
            await scope.aget(Session)
    assert [str(e) for e in caught.value.exceptions] == ["could not close the session"]
    with pytest.raises(FinalizationError) as twice:
        async with container.scope() as scope:
            await scope.aget(Config)
    assert "yielded more than once" in str(twice.value.exceptions[0])
    with pytest.raises(ScopeClosed):
        await scope.aget(Config)  # the scope is closed even though finalizing failed


def test_provides_says_what_the_container_can_resolve_in_any_scope() -> None:
    container = lifetimes().build()
    assert container.provides(Config)
    assert container.provides(Session)  # request-scoped: provided, resolved in a request only
    assert container.provides(list[Config])  # a collection of what is registered
    assert not container.provides(Token)
    assert not container.provides(Config, name="other")
    with container.scope() as request:
        assert request.provides(Handler)
        assert not request.provides(Token)
