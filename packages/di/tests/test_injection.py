"""@inject fills Injected[...] parameters from the scope open around the call."""

from __future__ import annotations

import inspect

import pytest

from uno.di import ContainerBuilder, Injected, Scope, inject
from uno.di.exceptions import NoActiveScope


class Request:
    def __init__(self, path: str) -> None:
        self.path = path


class Greeter:
    def __init__(self, request: Request) -> None:
        self.request = request

    def greet(self, name: str) -> str:
        return f"hello {name} at {self.request.path}"


@inject
async def endpoint(name: str, greeter: Injected[Greeter]) -> str:
    return greeter.greet(name)


@inject
def sync_endpoint(name: str, greeter: Injected[Greeter]) -> str:
    return greeter.greet(name)


def container_with_request() -> ContainerBuilder:
    builder = ContainerBuilder()
    builder.add_context(Request)
    builder.add(Greeter, scope=Scope.REQUEST)
    return builder


@pytest.mark.anyio
async def test_an_async_function_gets_its_injected_parameters_from_the_current_scope() -> None:
    container = container_with_request().build()
    async with container.scope(context={Request: Request("/a")}):
        assert await endpoint("ada") == "hello ada at /a"
    async with container.scope(context={Request: Request("/b")}):
        assert await endpoint("bob") == "hello bob at /b"


@pytest.mark.anyio
async def test_a_sync_function_called_inside_an_async_scope_gets_them_and_explicit_ones_win() -> (
    None
):
    container = container_with_request().build()
    async with container.scope(context={Request: Request("/s")}):
        assert sync_endpoint("ada") == "hello ada at /s"
        assert sync_endpoint("ada", greeter=Greeter(Request("/x"))) == "hello ada at /x"


def test_a_scope_entered_with_sync_with_is_not_current_so_the_sync_path_stays_cheap() -> None:
    container = container_with_request().build()
    with container.scope(context={Request: Request("/s")}), pytest.raises(NoActiveScope):
        sync_endpoint("ada")


def test_injected_parameters_are_hidden_from_the_signature() -> None:
    assert list(inspect.signature(endpoint).parameters) == ["name"]


@pytest.mark.anyio
async def test_calling_outside_any_scope_says_to_open_one() -> None:
    with pytest.raises(NoActiveScope) as caught:
        await endpoint("ada")
    assert caught.value.code == "di.no_active_scope"
    assert "container.scope(...)" in str(caught.value)
