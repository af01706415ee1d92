"""Validation at build time: missing dependencies, cycles and scope violations."""

from __future__ import annotations

import pytest

from uno.di import ContainerBuilder, Scope
from uno.di.exceptions import DependencyCycle, MissingDependency, ScopeViolation


class Missing:
    pass


class C:
    def __init__(self, missing: Missing) -> None:
        self.missing = missing


class B:
    def __init__(self, c: C) -> None:
        self.c = c


class A:
    def __init__(self, b: B) -> None:
        self.b = b


class Egg:
    def __init__(self, chicken: Chicken) -> None:
        self.chicken = chicken


class Chicken:
    def __init__(self, egg: Egg) -> None:
        self.egg = egg


class Request:
    pass


class Helper:
    def __init__(self, request: Request) -> None:
        self.request = request


class Singleton:
    def __init__(self, helper: Helper) -> None:
        self.helper = helper


def test_a_missing_dependency_names_the_whole_chain_and_suggests_the_registration() -> None:
    builder = ContainerBuilder()
    for service in (A, B, C):
        builder.add(service)
    with pytest.raises(MissingDependency) as caught:
        builder.build()
    assert caught.value.code == "di.missing_dependency"
    assert caught.value.chain == ("A", "B", "C")
    assert str(caught.value) == (
        "Nothing provides Missing, needed by A → B → C → Missing (missing). Register it, "
        "e.g. builder.add(Missing, scope=...), or provide it as context with "
        "builder.add_context(...)."
    )


def test_a_cycle_is_refused_and_shown() -> None:
    builder = ContainerBuilder()
    builder.add(Egg)
    builder.add(Chicken)
    with pytest.raises(DependencyCycle) as caught:
        builder.build()
    assert caught.value.code == "di.cycle"
    assert caught.value.cycle == ("Egg", "Chicken", "Egg")
    assert "Dependency cycle: Egg → Chicken → Egg." in str(caught.value)


def test_a_request_scoped_service_injected_into_an_app_scoped_one_is_refused() -> None:
    builder = ContainerBuilder()
    builder.add(Request, scope=Scope.REQUEST)
    builder.add(Helper, scope=Scope.REQUEST)
    builder.add(Singleton, scope=Scope.APP)
    with pytest.raises(ScopeViolation) as caught:
        builder.build()
    assert caught.value.code == "di.scope_violation"
    assert str(caught.value).startswith("Singleton (app scope) depends on Helper (request scope)")


def test_a_transient_in_between_does_not_hide_a_scope_violation() -> None:
    builder = ContainerBuilder()
    builder.add_context(Request, scope=Scope.REQUEST)
    builder.add(Helper)
    builder.add(Singleton, scope=Scope.APP)
    with pytest.raises(ScopeViolation, match=r"Singleton \(app scope\) depends on Request"):
        builder.build()


def test_a_service_of_a_sibling_scope_of_equal_depth_is_refused() -> None:
    session = Scope("session", depth=1)
    builder = ContainerBuilder()
    builder.add(Request, scope=session)
    builder.add(Helper, scope=Scope.REQUEST)
    with pytest.raises(ScopeViolation, match=r"Helper \(request scope\) depends on Request"):
        builder.build()


def test_a_short_lived_service_may_depend_on_longer_lived_ones() -> None:
    job = Scope("job", depth=2)
    builder = ContainerBuilder()
    builder.add(Request, scope=Scope.APP)
    builder.add(Helper, scope=Scope.REQUEST)
    builder.add(Singleton, scope=job)
    container = builder.build()
    with container.scope() as request, request.scope(job) as inner:
        assert inner.get(Singleton).helper is request.get(Helper)
        assert inner.get(Helper).request is container.get(Request)
