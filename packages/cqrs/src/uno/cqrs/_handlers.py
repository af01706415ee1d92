"""Handlers: plain functions or classes, sync or async, read once when the buses are built.

A handler's first parameter (after ``self`` for a class's ``handle``) names
the message type it takes. Every other parameter is a dependency: one typed
``MessageContext`` gets the send's context, the rest are resolved from the
request's DI scope. A class handler's constructor parameters are
dependencies too (or the container builds the class itself).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import anyio.to_thread

from uno.cqrs._messages import Message, MessageContext, ServiceResolver
from uno.cqrs.exceptions import BusConfigurationError, MissingHandlerDependency

__all__ = ["HandlerSpec", "discover", "handler", "read_handler"]

H = TypeVar("H", bound=Callable[..., Any] | type)
_MARK = "__uno_cqrs_handler__"
_CONTEXT = object()  # the marker of a parameter that takes the MessageContext

Invoke = Callable[[Message, MessageContext], Awaitable[Any]]


def handler(target: H) -> H:
    """Mark a function or class as a handler, for ``BusBuilder.scan`` to find.

    ``BusBuilder.register`` takes unmarked ones as well.
    """
    setattr(target, _MARK, True)
    return target


@dataclass(frozen=True)
class _Dependency:
    name: str
    service: Any  # a type, or _CONTEXT
    default: Any  # inspect.Parameter.empty when required


@dataclass(frozen=True)
class HandlerSpec:
    """A handler as read at registration: what it takes and what it needs."""

    target: Any
    name: str
    message_type: type[Message]
    returns: Any
    dependencies: tuple[_Dependency, ...]
    constructor: tuple[_Dependency, ...]
    is_class: bool
    is_async: bool

    def check(self, container: ServiceResolver | None) -> None:
        """Raise ``MissingHandlerDependency`` for a required dependency nobody provides."""
        for dependency in (*self.constructor, *self.dependencies):
            if dependency.service is _CONTEXT:
                continue
            if dependency.default is not inspect.Parameter.empty:
                continue
            if container is None or not container.provides(dependency.service):
                raise MissingHandlerDependency(
                    self.name, dependency.name, _describe(dependency.service)
                )

    def compile(self, container: ServiceResolver | None) -> Invoke:
        """Return ``invoke(message, context)``: resolve the dependencies, then call the handler."""
        provided = {
            d.name: container is not None and container.provides(d.service)
            for d in (*self.constructor, *self.dependencies)
            if d.service is not _CONTEXT
        }
        call_args = _argument_builder(self.dependencies, provided)
        if self.is_class:
            cls = self.target
            build_self = container is not None and container.provides(cls)
            init_args = _argument_builder(self.constructor, provided)
            is_async = self.is_async

            async def invoke_class(message: Message, context: MessageContext) -> Any:
                scope = context.scope
                if build_self:
                    assert scope is not None
                    instance = await scope.aget(cls)
                else:
                    instance = cls(**await init_args(context))
                method = instance.handle
                kwargs = await call_args(context)
                if is_async:
                    return await method(message, **kwargs)
                return await anyio.to_thread.run_sync(functools.partial(method, message, **kwargs))

            return invoke_class
        fn = self.target
        if self.is_async:

            async def invoke_async(message: Message, context: MessageContext) -> Any:
                return await fn(message, **await call_args(context))

            return invoke_async

        async def invoke_sync(message: Message, context: MessageContext) -> Any:
            kwargs = await call_args(context)
            return await anyio.to_thread.run_sync(functools.partial(fn, message, **kwargs))

        return invoke_sync


def _argument_builder(
    dependencies: tuple[_Dependency, ...], provided: dict[str, bool]
) -> Callable[[MessageContext], Awaitable[dict[str, Any]]]:
    """Return what builds the keyword arguments of ``dependencies`` for one send."""
    plan = tuple(
        (d.name, d.service, d.service is _CONTEXT, provided.get(d.name, False))
        for d in dependencies
    )

    async def arguments(context: MessageContext) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for name, service, is_context, available in plan:
            if is_context:
                kwargs[name] = context
            elif available:
                scope = context.scope
                assert scope is not None  # the bus opens one when a container is given
                kwargs[name] = await scope.aget(service)
            # else: the parameter keeps its default
        return kwargs

    return arguments


def read_handler(target: Any) -> HandlerSpec:
    """Read a handler's message type, dependencies and return type, or raise why it is not one."""
    name = getattr(target, "__qualname__", repr(target))
    if inspect.isclass(target):
        method = getattr(target, "handle", None)
        if method is None or not callable(method):
            raise BusConfigurationError(
                f"{name} is a class without a handle(self, message) method: give it one, or "
                "register a function"
            )
        params = _parameters(method, name, skip_self=True)
        init = target.__init__
        constructor = (
            ()
            if init is object.__init__
            else _parameters(init, name, skip_self=True, message=False)
        )
        is_async = inspect.iscoroutinefunction(method)
    elif callable(target):
        params = _parameters(target, name, skip_self=False)
        constructor = ()
        is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
    else:
        raise BusConfigurationError(f"{target!r} is not a function or class: it cannot handle")
    message_type, *dependencies = params
    if not (inspect.isclass(message_type.service) and issubclass(message_type.service, Message)):
        raise BusConfigurationError(
            f"{name}'s first parameter {message_type.name!r} is annotated "
            f"{_describe(message_type.service)}, not a Command or Query class: annotate it with "
            "the message type it handles"
        )
    hints = _hints(getattr(target, "handle") if inspect.isclass(target) else target, name)  # noqa: B009
    return HandlerSpec(
        target=target,
        name=name,
        message_type=message_type.service,
        returns=hints.get("return", Any),
        dependencies=tuple(dependencies),
        constructor=tuple(constructor),
        is_class=inspect.isclass(target),
        is_async=is_async,
    )


def _hints(fn: Any, name: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a NameError of a forward reference, mostly
        raise BusConfigurationError(
            f"cannot read the annotations of {name}: {exc}. Import the names it annotates with "
            "at module level"
        ) from exc


def _parameters(
    fn: Any, name: str, *, skip_self: bool, message: bool = True
) -> tuple[_Dependency, ...]:
    hints = _hints(fn, name)
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if skip_self and params:
        params = params[1:]
    if message and not params:
        raise BusConfigurationError(
            f"{name} takes no parameter: its first one must be the message it handles"
        )
    out: list[_Dependency] = []
    for index, param in enumerate(params):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in hints:
            raise BusConfigurationError(
                f"{name}'s parameter {param.name!r} has no type annotation: annotate it with the "
                "message type (first) or the service it needs"
            )
        service = hints[param.name]
        if (not message or index > 0) and service is MessageContext:
            service = _CONTEXT
        out.append(_Dependency(param.name, service, param.default))
    return tuple(out)


def _describe(service: Any) -> str:
    if service is _CONTEXT:
        return "MessageContext"
    return getattr(service, "__qualname__", None) or repr(service)


def discover(package: ModuleType | str) -> Iterator[Any]:
    """Import ``package`` and its submodules; yield what ``@handler`` marked, once each.

    Also yields the ``Message`` classes the modules define, so that the
    builder can refuse one without a handler.
    """
    root = importlib.import_module(package) if isinstance(package, str) else package
    modules = [root]
    path = getattr(root, "__path__", None)
    if path is not None:
        modules.extend(
            importlib.import_module(info.name)
            for info in pkgutil.walk_packages(path, prefix=root.__name__ + ".")
        )
    seen: set[int] = set()
    for module in modules:
        for value in vars(module).values():
            if id(value) in seen or getattr(value, "__module__", None) != module.__name__:
                continue
            is_message = inspect.isclass(value) and issubclass(value, Message)
            if getattr(value, "__dict__", {}).get(_MARK) is True or is_message:
                seen.add(id(value))
                yield value
