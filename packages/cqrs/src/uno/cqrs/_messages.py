"""Commands, queries, and the context that travels with one of them through the pipeline."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Command",
    "Message",
    "MessageContext",
    "Principal",
    "ServiceContainer",
    "ServiceResolver",
]


class Message(BaseModel):
    """A command or a query: a frozen pydantic model, validated when it is made.

    Unknown fields are refused (``extra="forbid"``), so a misspelled field is
    an error at the boundary rather than a silently ignored value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    roles: ClassVar[frozenset[str]] = frozenset()
    """Roles the principal needs, any one of them (the authorization behaviour checks)."""

    permissions: ClassVar[frozenset[str]] = frozenset()
    """Permissions the principal needs, all of them."""

    timeout: ClassVar[float | None] = None
    """Seconds the handler may take (the timeout behaviour enforces it); ``None``: no limit."""


class Command(Message):
    """A request to change state; exactly one handler, which may return a value."""


class Query(Message):
    """A request to read state; exactly one handler, which returns the answer."""


@runtime_checkable
class Principal(Protocol):
    """Who sends a message: what the authorization behaviour asks about."""

    @property
    def id(self) -> str:
        """A stable identifier of the principal (a user id, a service name)."""
        ...

    @property
    def roles(self) -> frozenset[str]:
        """The principal's roles."""
        ...

    @property
    def permissions(self) -> frozenset[str]:
        """The principal's permissions."""
        ...


@runtime_checkable
class ServiceResolver(Protocol):
    """An open dependency-injection scope (``uno.di``'s scopes satisfy it)."""

    def provides(self, service: Any) -> bool:
        """Return whether ``service`` can be resolved."""
        ...

    def aget(self, service: Any) -> Awaitable[Any]:
        """Resolve ``service`` in this scope."""
        ...


@runtime_checkable
class ServiceContainer(ServiceResolver, Protocol):
    """A container the buses open a request scope of when the caller gives none.

    ``uno.di``'s ``Container`` satisfies it: ``scope()`` returns a scope to
    enter with ``async with``.
    """

    def scope(self) -> Any:
        """Return a new request scope (an async context manager yielding a resolver)."""
        ...


@dataclass
class MessageContext:
    """What one send carries besides the message: who, which request, which scope.

    A handler that declares a parameter of this type gets it. Behaviours
    read and fill it: the unit of work behaviour sets ``unit_of_work``; the
    idempotency behaviour reads ``idempotency_key``.
    """

    principal: Principal | None = None
    correlation_id: str = field(default_factory=lambda: os.urandom(16).hex())
    """Ties together what one request caused; 32 random hex digits unless given."""
    causation_id: str | None = None
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    scope: ServiceResolver | None = None
    """The request's DI scope; ``None``: the bus opens one of its container per send."""
    unit_of_work: Any = None
    """The unit of work of this command, when the unit of work behaviour runs."""
    items: dict[str, Any] = field(default_factory=dict)
    """Free room for behaviours and handlers."""
    _after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` once the command's unit of work committed (never if it rolled back).

        Without a unit of work behaviour, callbacks run when the handler returns.
        """
        self._after_commit.append(callback)

    def discard_after_commit(self) -> None:
        """Forget the callbacks registered so far: the unit of work rolled back."""
        self._after_commit.clear()

    async def run_after_commit(self) -> None:
        """Run and forget the callbacks registered so far, in order (the pipeline calls it)."""
        callbacks, self._after_commit[:] = list(self._after_commit), []
        for callback in callbacks:
            await callback()
