"""The command and query buses, built once: handlers checked, pipelines composed.

``BusBuilder`` collects handlers (registered, or found by ``scan``) and
behaviours; ``build()`` checks that every message has exactly one handler
whose dependencies the container provides, and composes, per message type,
the chain of the behaviours that apply to it. A send then looks up its
message type once and runs prepared closures: nothing is introspected per call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, Protocol, Self

from uno.cqrs._handlers import HandlerSpec, discover, read_handler
from uno.cqrs._messages import Command, Message, MessageContext, Query, ServiceContainer
from uno.cqrs._result import Err, Ok
from uno.cqrs.exceptions import (
    BusConfigurationError,
    DuplicateHandler,
    HandlerNotFound,
)

__all__ = ["Behaviour", "BusBuilder", "Buses", "CommandBus", "Next", "QueryBus"]

Next = Callable[[Message, MessageContext], Awaitable[Any]]
"""The rest of the pipeline: ``await call_next(message, context)`` returns the handler's value."""


class Behaviour(Protocol):
    """One step around every handler it applies to: run code before and after ``call_next``.

    A behaviour that needs to prepare per message type may also define
    ``bind(message_type, returns) -> Behaviour``: ``build()`` calls it once
    for each message type it applies to, with the handler's return
    annotation, and uses what it returns in that pipeline.
    """

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        """Handle ``message`` (usually by awaiting ``call_next``) and return the result."""
        ...


@dataclass(frozen=True)
class _Use:
    behaviour: Behaviour
    applies_to: tuple[type, ...]
    when: Callable[[type[Message]], bool] | None

    def applies(self, message_type: type[Message]) -> bool:
        if self.applies_to and not any(_is_a(message_type, base) for base in self.applies_to):
            return False
        return self.when is None or self.when(message_type)


def _is_a(message_type: type, base: type) -> bool:
    try:
        return issubclass(message_type, base)
    except TypeError:  # a protocol with data members cannot be checked by class
        return False


class _Route(NamedTuple):
    spec: HandlerSpec
    run: Next


class _ErrRaised(Exception):
    """An ``Err`` a handler returned, carried through the behaviours as an exception."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _Bus:
    """Sends messages of one kind to their handlers through their pipelines."""

    kind = "message"

    def __init__(self, routes: dict[type[Message], _Route], container: Any) -> None:
        self._routes = routes
        self._container = container

    @property
    def message_types(self) -> tuple[type[Message], ...]:
        """The message types this bus has a handler for."""
        return tuple(self._routes)

    def handler_of(self, message_type: type[Message]) -> Any:
        """Return the function or class that handles ``message_type``."""
        return self._route(message_type).spec.target

    def _route(self, message_type: type[Message]) -> _Route:
        try:
            return self._routes[message_type]
        except KeyError:
            raise HandlerNotFound(
                message_type.__qualname__, known=[t.__qualname__ for t in self._routes]
            ) from None

    async def send(
        self, message: Message, *, context: MessageContext | None = None, as_result: bool = False
    ) -> Any:
        """Run ``message`` through its pipeline and handler; return what the handler returned.

        A handler may return ``Ok(value)`` or ``Err(error)``. By default the
        bus returns the value and raises the error; with ``as_result=True``
        it returns a ``Result`` instead, and an exception raised on the way
        comes back as ``Err(exception)``.

        Raises:
            HandlerNotFound: no handler takes the message's type.
            ValidationFailed, NotAuthorized, ...: what the behaviours raise.
        """
        route = self._route(type(message))
        context = context if context is not None else MessageContext()
        try:
            if context.scope is None and self._container is not None:
                async with self._container.scope() as scope:
                    context.scope = scope
                    try:
                        value = await route.run(message, context)
                    finally:
                        context.scope = None
            else:
                value = await route.run(message, context)
            await context.run_after_commit()  # left by no unit of work: the handler is done
        except _ErrRaised as failed:
            if as_result:
                return Err(failed.error)
            raise failed.error from None
        except Exception as exc:
            if as_result:
                return Err(exc)
            raise
        return Ok(value) if as_result else value


class CommandBus(_Bus):
    """Sends each command to its one handler (``await commands.send(OpenAccount(...))``)."""

    kind = "command"


class QueryBus(_Bus):
    """Sends each query to its one handler and returns the answer."""

    kind = "query"


class Buses(NamedTuple):
    """What ``BusBuilder.build()`` returns: the command bus and the query bus."""

    commands: CommandBus
    queries: QueryBus


class BusBuilder:
    """Collects handlers and behaviours; ``build()`` checks them and returns the buses.

    ``container`` (``uno.di``'s ``Container``, or anything with ``provides``,
    ``aget`` and ``scope()``) resolves handlers' dependencies in the request
    scope of each send: the caller's (``MessageContext(scope=...)``), or one
    the bus opens and closes around the send.
    """

    def __init__(self, *, container: ServiceContainer | None = None) -> None:
        self._container = container
        self._specs: list[HandlerSpec] = []
        self._uses: list[_Use] = []
        self._required: list[type[Message]] = []

    def register(self, *handlers: Any) -> Self:
        """Add handlers: functions or classes whose first parameter is the message type."""
        self._specs.extend(read_handler(target) for target in handlers)
        return self

    def scan(self, *packages: ModuleType | str) -> Self:
        """Register every ``@handler`` of these packages (their submodules too).

        Each ``Command`` and ``Query`` class the packages define must then
        have a handler, or ``build()`` raises ``HandlerNotFound``.
        """
        for package in packages:
            for found in discover(package):
                if inspect.isclass(found) and issubclass(found, Message):
                    if found not in (Command, Query, Message):
                        self._required.append(found)
                else:
                    self.register(found)
        return self

    def require(self, *message_types: type[Message]) -> Self:
        """Make ``build()`` refuse the buses unless these message types have a handler."""
        self._required.extend(message_types)
        return self

    def use(
        self,
        behaviour: Behaviour,
        *,
        applies_to: type | Iterable[type] = (),
        when: Callable[[type[Message]], bool] | None = None,
    ) -> Self:
        """Add a behaviour around the handlers of the message types it applies to.

        Behaviours run in the order they are added, the first outermost.
        ``applies_to`` keeps the message classes that subclass one of these
        (a base class or a protocol, as a marker); ``when`` is a further
        test of the message class. Without either, it applies to every message.
        """
        bases = (applies_to,) if isinstance(applies_to, type) else tuple(applies_to)
        self._uses.append(_Use(behaviour, bases, when))
        return self

    def build(self) -> Buses:
        """Check the handlers and compose the pipelines; return the two buses.

        Raises:
            DuplicateHandler: two handlers take one message type.
            HandlerNotFound: a required (or scanned) message type has no handler.
            MissingHandlerDependency: a handler needs what the container lacks.
            BusConfigurationError: a handler takes something that is neither
                a Command nor a Query.
        """
        by_type: dict[type[Message], HandlerSpec] = {}
        for spec in self._specs:
            known = by_type.get(spec.message_type)
            if known is not None and known.target is not spec.target:
                raise DuplicateHandler(spec.message_type.__qualname__, known.name, spec.name)
            by_type[spec.message_type] = spec
        for required in self._required:
            if required not in by_type:
                raise HandlerNotFound(
                    required.__qualname__, known=[t.__qualname__ for t in by_type]
                )
        commands: dict[type[Message], _Route] = {}
        queries: dict[type[Message], _Route] = {}
        for message_type, spec in by_type.items():
            spec.check(self._container)
            route = _Route(spec, self._compose(message_type, spec))
            if issubclass(message_type, Query):
                queries[message_type] = route
            elif issubclass(message_type, Command):
                commands[message_type] = route
            else:
                raise BusConfigurationError(
                    f"{spec.name} handles {message_type.__qualname__}, which is neither a Command "
                    "nor a Query: derive it from one of them"
                )
        return Buses(CommandBus(commands, self._container), QueryBus(queries, self._container))

    def _compose(self, message_type: type[Message], spec: HandlerSpec) -> Next:
        invoke = spec.compile(self._container)

        async def handle(message: Message, context: MessageContext) -> Any:
            result: Any = await invoke(message, context)
            if isinstance(result, Ok):
                return result.value
            if isinstance(result, Err):
                raise _ErrRaised(result.error)
            return result

        chain: Next = handle
        for use in reversed([u for u in self._uses if u.applies(message_type)]):
            behaviour = use.behaviour
            bind = getattr(behaviour, "bind", None)
            if bind is not None:  # it prepares itself for this message type and its handler
                behaviour = bind(message_type, spec.returns)
            chain = _link(behaviour, chain)
        return chain


def _link(behaviour: Behaviour, call_next: Next) -> Next:
    async def step(message: Message, context: MessageContext) -> Any:
        return await behaviour(message, context, call_next)

    return step


def unwrap_failure(exc: BaseException) -> BaseException:
    """Return the error an ``Err`` carried, for behaviours that look at failures."""
    return exc.error if isinstance(exc, _ErrRaised) else exc
