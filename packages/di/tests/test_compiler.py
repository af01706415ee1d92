"""Compiled resolution: no introspection after build, one generated function per chain."""

from __future__ import annotations

import inspect
import typing

import pytest

from uno.di import ContainerBuilder, Scope


class D3:
    pass


class D2:
    def __init__(self, d3: D3) -> None:
        self.d3 = d3


class D1:
    def __init__(self, d2: D2, *, d3: D3) -> None:
        self.d2 = d2
        self.d3 = d3


class Top:
    def __init__(self, d1: D1) -> None:
        self.d1 = d1


def chain() -> ContainerBuilder:
    builder = ContainerBuilder()
    for service in (D3, D2, D1, Top):
        builder.add(service, scope=Scope.REQUEST)
    return builder


def test_resolving_after_build_never_introspects(monkeypatch: pytest.MonkeyPatch) -> None:
    container = chain().build()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("introspection on the resolution path")

    monkeypatch.setattr(inspect, "signature", forbidden)
    monkeypatch.setattr(typing, "get_type_hints", forbidden)
    for _ in range(2):
        with container.scope() as scope:
            top = scope.get(Top)
            assert top.d1.d3 is top.d1.d2.d3 is scope.get(D3)


def test_a_request_chain_resolves_through_one_generated_function() -> None:
    container = chain().build()
    with container.scope() as scope:
        resolve = scope._sync[Top]
        assert resolve.__code__.co_filename == "<string>"
        scope._sync = {Top: resolve}
        assert isinstance(scope.get(Top).d1.d2.d3, D3)
