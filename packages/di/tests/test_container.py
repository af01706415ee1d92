"""The built container: overrides for tests, open generics and once-only app services."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import anyio
import pytest

from uno.di import ContainerBuilder, Scope
from uno.di.exceptions import MissingDependency, RegistrationError, ScopeClosed, UnknownService

T = TypeVar("T")


class Mailer:
    def send(self) -> str:
        return "real"


class FakeMailer(Mailer):
    def send(self) -> str:
        return "fake"


class Signup:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer


class Directory:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer


def overridable() -> ContainerBuilder:
    builder = ContainerBuilder()
    builder.add(Mailer, scope=Scope.APP)
    builder.add(Directory, scope=Scope.APP)
    builder.add(Signup, scope=Scope.REQUEST)
    return builder


def test_an_override_replaces_a_service_and_its_injections_until_the_block_ends() -> None:
    container = overridable().build()
    fake = FakeMailer()
    with container.override(Mailer, fake):
        with container.scope() as scope:
            assert scope.get(Signup).mailer is fake
        assert container.get(Directory).mailer is fake
    with container.scope() as scope:
        assert scope.get(Signup).mailer.send() == "real"
    assert container.get(Directory).mailer.send() == "real"


def test_an_override_is_validated() -> None:
    container = overridable().build()
    with pytest.raises(UnknownService), container.override(FakeMailer, FakeMailer()):
        pass
    with pytest.raises(RegistrationError, match="not an instance of Mailer"):  # noqa: SIM117
        with container.override(Mailer, object()):
            pass


@pytest.mark.anyio
async def test_concurrent_tasks_each_see_only_their_own_override() -> None:
    container = overridable().build()
    seen: dict[str, str] = {}

    async def overriding() -> None:
        with container.override(Mailer, FakeMailer()):
            await anyio.sleep(0.01)
            async with container.scope() as scope:
                seen["overriding"] = (await scope.aget(Signup)).mailer.send()
            await anyio.sleep(0.01)

    async def plain() -> None:
        await anyio.sleep(0.005)
        async with container.scope() as scope:
            seen["plain"] = (await scope.aget(Signup)).mailer.send()
            seen["plain directory"] = container.get(Directory).mailer.send()

    async with anyio.create_task_group() as group:
        group.start_soon(overriding)
        group.start_soon(plain)
    assert seen == {"overriding": "fake", "plain": "real", "plain directory": "real"}


class Order:
    pass


class Invoice:
    pass


class Session:
    pass


class Repository(Generic[T]):
    def __init__(self, session: Session) -> None:
        self.session = session


class OrderService:
    def __init__(self, orders: Repository[Order]) -> None:
        self.orders = orders


def test_an_open_generic_class_is_registered_once_and_resolved_for_any_argument() -> None:
    builder = ContainerBuilder()
    builder.add(Session, scope=Scope.REQUEST)
    builder.add(Repository, scope=Scope.REQUEST)
    builder.add(OrderService, scope=Scope.REQUEST)
    container = builder.build()
    with container.scope() as scope:
        orders = scope.get(OrderService).orders
        assert orders is scope.get(Repository[Order])
        assert orders.__orig_class__ == Repository[Order]  # type: ignore[attr-defined]
        invoices = scope.get(Repository[Invoice])
        assert id(invoices) != id(orders)
        assert invoices.session is orders.session


class Store(Generic[T]):
    def load(self) -> str:
        raise NotImplementedError


class MemoryStore(Store[T]):
    def __init__(self, session: Session) -> None:
        self.session = session

    def load(self) -> str:
        return "memory"


def test_a_generic_implementation_bound_to_a_generic_interface_serves_every_argument() -> None:
    builder = ContainerBuilder()
    builder.add(Session, scope=Scope.APP)
    builder.add(MemoryStore, provides=Store, scope=Scope.APP)
    container = builder.build()
    orders = container.get(Store[Order])
    assert isinstance(orders, MemoryStore)
    assert orders.load() == "memory"
    assert orders is container.get(Store[Order])
    assert id(orders) != id(container.get(Store[Invoice]))


def test_a_missing_service_asked_for_after_build_is_unknown() -> None:
    container = ContainerBuilder().build()
    with pytest.raises(UnknownService) as caught:
        container.get(Order)
    assert caught.value.code == "di.unknown_service"


class NeedsMissing:
    def __init__(self, order: Order) -> None:
        self.order = order


class Wrapper(Generic[T]):
    def __init__(self, inner: T) -> None:
        self.inner = inner


def test_a_generic_asked_for_after_build_is_validated_when_first_asked() -> None:
    builder = ContainerBuilder()
    builder.add(Wrapper)
    builder.add(Session)
    container = builder.build()
    assert isinstance(container.get(Wrapper[Session]).inner, Session)
    with pytest.raises(MissingDependency, match=r"Wrapper\[Order\] → Order \(missing\)"):
        container.get(Wrapper[Order])


class Expensive:
    created = 0

    def __init__(self) -> None:
        type(self).created += 1
        time.sleep(0.01)


class Pool:
    pass


@pytest.mark.anyio
async def test_an_async_app_service_is_created_once_when_100_tasks_ask_at_once() -> None:
    created: list[Pool] = []

    async def open_pool() -> AsyncIterator[Pool]:
        await anyio.sleep(0.01)
        pool = Pool()
        created.append(pool)
        yield pool

    builder = ContainerBuilder()
    builder.add(open_pool, scope=Scope.APP)
    container = builder.build()
    results: list[Pool] = []

    async def resolve() -> None:
        async with container.scope() as scope:
            results.append(await scope.aget(Pool))

    async with container, anyio.create_task_group() as group:
        for _ in range(100):
            group.start_soon(resolve)
    assert len(created) == 1
    assert len(results) == 100
    assert all(pool is created[0] for pool in results)


def test_a_sync_app_service_is_created_once_when_threads_ask_at_once() -> None:
    Expensive.created = 0
    builder = ContainerBuilder()
    builder.add(Expensive, scope=Scope.APP)
    container = builder.build()
    barrier = threading.Barrier(8)

    def resolve() -> Expensive:
        barrier.wait()
        with container.scope() as scope:
            return scope.get(Expensive)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: resolve(), range(8)))
    assert Expensive.created == 1
    assert all(result is results[0] for result in results)


class Engine:
    pass


def test_closing_the_container_finalizes_app_scoped_generator_factories() -> None:
    events: list[str] = []

    def start_engine() -> Iterator[Engine]:
        events.append("start")
        yield Engine()
        events.append("stop")

    builder = ContainerBuilder()
    builder.add(start_engine, scope=Scope.APP)
    with builder.build() as container:
        assert container.get(Engine) is container.get(Engine)
        with container.scope() as scope:
            scope.get(Engine)
        assert events == ["start"]
    assert events == ["start", "stop"]


class ClosingResource:
    pass


class UsesResource:
    def __init__(self, resource: ClosingResource) -> None:
        self.resource = resource


class Shared:
    pass


class Left:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared


class Right:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared


class SharedTop:
    def __init__(self, left: Left, right: Right) -> None:
        self.left, self.right = left, right


def test_a_closed_container_opens_no_more_scopes() -> None:
    """After close, no scope can reach an app service that was already finalized."""
    log: list[str] = []

    def open_resource() -> Iterator[ClosingResource]:
        log.append("open")
        yield ClosingResource()
        log.append("close")

    builder = ContainerBuilder()
    builder.add(open_resource, scope=Scope.APP)
    builder.add(UsesResource, scope=Scope.REQUEST)
    container = builder.build()
    with container, container.scope() as scope:
        scope.get(UsesResource)
    assert log == ["open", "close"]
    with pytest.raises(ScopeClosed):
        container.scope()
    assert log == ["open", "close"]


def test_a_shared_dependency_is_built_once_in_a_fresh_scope() -> None:
    """The empty-scope fast path still builds a service needed twice only once."""
    builder = ContainerBuilder()
    for cls in (Shared, Left, Right, SharedTop):
        builder.add(cls, scope=Scope.REQUEST)
    container = builder.build()
    with container.scope() as scope:
        top = scope.get(SharedTop)
        assert top.left.shared is top.right.shared
        assert scope.get(Shared) is top.left.shared
    with container.scope() as other:
        assert other.get(SharedTop).left.shared is not top.left.shared


class RequestInfo:
    pass


class Typo:
    pass


def test_scope_context_keys_must_be_declared() -> None:
    builder = ContainerBuilder()
    builder.add_context(RequestInfo, scope=Scope.REQUEST)
    container = builder.build()
    info = RequestInfo()
    with container.scope(Scope.REQUEST, context={RequestInfo: info}) as scope:
        assert scope.get(RequestInfo) is info
    with pytest.raises(
        RegistrationError, match="not a context value of the 'request' scope"
    ) as error:
        container.scope(Scope.REQUEST, context={RequestInfo: info, Typo: Typo()})
    assert "builder.add_context(" in str(error.value)
