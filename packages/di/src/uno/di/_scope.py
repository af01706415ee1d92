"""Scopes: how long a resolved service lives and where it is cached."""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = ["Scope"]


class Scope:
    """A lifetime: services of a scope are created once per open scope of that kind.

    ``Scope.APP`` is the container itself (singletons), ``Scope.REQUEST`` one
    unit of work, ``Scope.TRANSIENT`` means "a new instance at every injection".
    Define custom nested scopes with a depth: a scope opens inside any open
    scope of smaller depth, and a service may only depend on services of its
    own scope or of a smaller depth (``Scope("job", depth=2)`` nests inside a
    request; ``Scope("session", depth=1)`` is a sibling of ``REQUEST``).

    Args:
        name: shown in errors; scopes compare by identity, not by name.
        depth: ``1`` or more; ``0`` is the app scope.
    """

    __slots__ = ("depth", "name")

    APP: ClassVar[Scope]
    REQUEST: ClassVar[Scope]
    TRANSIENT: ClassVar[Scope]

    def __init__(self, name: str, *, depth: int) -> None:
        self.name: Final = name
        self.depth: Final = depth

    def __repr__(self) -> str:
        return f"Scope({self.name!r}, depth={self.depth})"


Scope.APP = Scope("app", depth=0)
Scope.REQUEST = Scope("request", depth=1)
Scope.TRANSIENT = Scope("transient", depth=-1)
