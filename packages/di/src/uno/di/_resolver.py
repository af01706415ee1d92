"""Open scopes: where services are resolved, cached and finalized."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from types import AsyncGeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar, overload

from uno.di._keys import describe, key_of, named_key
from uno.di._scope import Scope
from uno.di.exceptions import (
    AsyncScopeRequired,
    FinalizationError,
    RegistrationError,
    ScopeClosed,
    ScopeNestingError,
)

if TYPE_CHECKING:
    from uno.di._container import Container

__all__ = ["Resolver", "ScopedContainer", "current_scope"]

T = TypeVar("T")

current_scope: ContextVar[Resolver | None] = ContextVar("uno.di.current_scope", default=None)


class Resolver:
    """An open scope: resolve services with ``get`` (sync graphs) or ``aget`` (any graph)."""

    __slots__ = ("_async", "_cache", "_finalizers", "_kind", "_parent", "_root", "_sync", "_token")

    _cache: dict[Any, Any]
    _parent: Resolver | None
    _root: Container
    _kind: Scope
    _sync: Mapping[Any, Callable[[Resolver], Any]]
    _async: Mapping[Any, Callable[[Resolver], Awaitable[Any]]]
    _finalizers: list[Any] | None
    _token: Token[Resolver | None] | None

    @property
    def kind(self) -> Scope:
        """Return the scope this resolver stands for."""
        return self._kind

    def provides(self, service: Any, name: str | None = None) -> bool:
        """Return whether the container can resolve ``service`` (as ``get`` takes it).

        It says nothing about scopes: a request-scoped service is provided,
        though only a request scope resolves it. Frameworks call it when they
        are built, to refuse a handler whose dependency nothing provides.
        """
        return self._root._graph.provides(key_of(named_key(service, name)))

    @overload
    def get(self, service: type[T], name: str | None = None) -> T: ...
    @overload
    def get(self, service: Any, name: str | None = None) -> Any: ...
    def get(self, service: Any, name: str | None = None) -> Any:
        """Return the service for ``service`` (a type, ``Annotated[T, Named(...)]``, ``list[T]``).

        Raises:
            AsyncResolutionRequired: an async factory builds it or a dependency;
                use ``aget``.
            UnknownService: nothing provides it.
            ScopeNotActive: it lives in a scope that is not open here.
        """
        key = service if name is None else (service, name)
        try:
            resolve = self._sync[key]
        except KeyError:
            resolve = self._root._install(key, self._kind)[0]
        return resolve(self)

    @overload
    def aget(self, service: type[T], name: str | None = None) -> Awaitable[T]: ...
    @overload
    def aget(self, service: Any, name: str | None = None) -> Awaitable[Any]: ...
    def aget(self, service: Any, name: str | None = None) -> Awaitable[Any]:
        """Return an awaitable of the service, running async factories as needed.

        Use it as ``await scope.aget(Service)``. It returns the resolver's own
        coroutine rather than wrapping it in another, one layer less per
        request; errors about the key (unknown service...) come from the call.
        """
        key = service if name is None else (service, name)
        resolve = self._async.get(key)
        if resolve is not None:
            return resolve(self)
        sync = self._sync.get(key)
        if sync is None:
            sync, resolve = self._root._install(key, self._kind)
            if resolve is not None:
                return resolve(self)
        return _ready(sync(self))

    def scope(
        self, kind: Scope = Scope.REQUEST, *, context: Mapping[Any, object] | None = None
    ) -> ScopedContainer:
        """Return a nested scope of ``kind``; enter it with ``with`` or ``async with``.

        Args:
            kind: a scope deeper than this one (``Scope.REQUEST`` by default).
            context: values this scope provides, declared with ``add_context``.

        Raises:
            ScopeNestingError: ``kind`` is not deeper than this scope.
        """
        if kind.depth <= self._kind.depth:
            raise ScopeNestingError(kind.name, kind.depth, self._kind.name, self._kind.depth)
        # Filled here rather than by an __init__: opening a scope is on every request's
        # path, and a class without __init__ is the cheapest to instantiate.
        scope = ScopedContainer()
        scope._parent = self
        scope._root = root = self._root
        scope._kind = kind
        try:
            scope._sync, scope._async = root._tables[kind]
        except KeyError:
            scope._sync, scope._async = root._tables_for(kind)
        if context:
            cache = {key_of(k): v for k, v in context.items()}
            declared = root._context_keys.get(kind, frozenset())
            undeclared = [k for k in cache if k not in declared]
            if undeclared:
                raise RegistrationError(
                    f"{describe(undeclared[0])} is not a context value of the {kind.name!r} "
                    f"scope: declare it with builder.add_context({describe(undeclared[0])}, "
                    "scope=...) for that scope, or check the key's spelling"
                )
            scope._cache = cache
        else:
            scope._cache = {}
        scope._finalizers = None
        return scope

    def _closing(self) -> list[Any]:
        finalizers = self._finalizers or []
        self._finalizers = None
        self._sync = self._async = _CLOSED[self._kind]
        return finalizers

    def close(self, error: BaseException | None = None) -> None:
        """Finalize this scope's generator factories, newest first.

        Args:
            error: the exception leaving the scope, thrown into each generator.

        Raises:
            FinalizationError: one or more finalizers raised (all of them ran).
        """
        errors: list[Exception] = []
        for finalizer in reversed(self._closing()):
            if isinstance(finalizer, AsyncGeneratorType):
                errors.append(AsyncScopeRequired(finalizer.__qualname__))
                continue
            try:
                _finish_generator(finalizer, error)
            except Exception as raised:
                errors.append(raised)
        if errors:
            raise FinalizationError(self._kind.name, errors)

    async def aclose(self, error: BaseException | None = None) -> None:
        """Finalize this scope's generator factories (sync and async), newest first."""
        errors: list[Exception] = []
        for finalizer in reversed(self._closing()):
            try:
                if isinstance(finalizer, AsyncGeneratorType):
                    if error is None:
                        # The common case, inline: a helper coroutine per finalizer costs
                        # as much as the rest of closing the scope.
                        try:
                            await anext(finalizer)
                        except StopAsyncIteration:
                            continue
                        errors.append(_yielded_again(finalizer))
                    else:
                        await _finish_async_generator(finalizer, error)
                else:
                    _finish_generator(finalizer, error)
            except Exception as raised:
                errors.append(raised)
        if errors:
            raise FinalizationError(self._kind.name, errors)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finalizers is None:
            self._sync = self._async = _CLOSED[self._kind]
        else:
            self.close(error)

    async def __aenter__(self) -> Self:
        # Only async scopes become current for @inject: a context variable switch
        # would double the cost of a sync scope, the hot path of sync code.
        self._token = current_scope.set(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is not None:
            current_scope.reset(token)
            self._token = None
        finalizers = self._finalizers
        if finalizers is None:
            self._sync = self._async = _CLOSED[self._kind]
        elif error is None and len(finalizers) == 1 and type(finalizers[0]) is AsyncGeneratorType:
            # The common case, inline: one resource opened by an async generator,
            # no error to throw into it. (A coroutine per step costs as much as the rest.)
            self._closing()
            try:
                await anext(finalizers[0])
            except StopAsyncIteration:
                return
            except Exception as raised:
                raise FinalizationError(self._kind.name, [raised]) from None
            raise FinalizationError(self._kind.name, [_yielded_again(finalizers[0])])
        else:
            await self.aclose(error)


class ScopedContainer(Resolver):
    """A scope opened inside another (a request, or a custom nested scope), by ``scope()``."""

    __slots__ = ()


async def _ready(value: T) -> T:
    """Return ``value``: what ``aget`` gives to await for a service built synchronously.

    A coroutine is the cheapest awaitable to make and await (cheaper than an
    object whose ``__await__`` is a generator).
    """
    return value


class _Closed(dict[Any, Any]):
    """The resolver table of a closed scope: every lookup explains the scope is closed."""

    def __init__(self, scope: str) -> None:
        super().__init__()
        self._scope = scope

    def __missing__(self, key: Any) -> NoReturn:
        raise ScopeClosed(self._scope)

    def get(self, key: Any, default: Any = None) -> NoReturn:
        raise ScopeClosed(self._scope)


class _ClosedTables(dict[Scope, _Closed]):
    """The closed table of each kind of scope, made on first use (a subscript is cheapest)."""

    def __missing__(self, kind: Scope) -> _Closed:
        table = self[kind] = _Closed(kind.name)
        return table


_CLOSED = _ClosedTables()


class ClosedScopes(dict[Scope, Any]):
    """A closed container's tables: opening any scope from it raises ``ScopeClosed``."""

    def __missing__(self, kind: Scope) -> NoReturn:
        raise ScopeClosed(Scope.APP.name)


def _finish_generator(generator: Any, error: BaseException | None) -> None:
    try:
        if error is None:
            next(generator)
        else:
            generator.throw(error)
    except StopIteration:
        return
    except BaseException as raised:
        if raised is error:
            return
        raise
    raise RegistrationError(
        f"Generator factory {generator.__qualname__} yielded more than once; yield exactly once."
    )


async def _finish_async_generator(generator: Any, error: BaseException | None) -> None:
    try:
        if error is None:
            await anext(generator)
        else:
            await generator.athrow(error)
    except StopAsyncIteration:
        return
    except BaseException as raised:
        if raised is error:
            return
        raise
    raise _yielded_again(generator)


def _yielded_again(generator: Any) -> RegistrationError:
    return RegistrationError(
        f"Async generator factory {generator.__qualname__} yielded more than once; yield "
        "exactly once."
    )
