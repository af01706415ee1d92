"""Turn validated nodes into resolver functions, once, at build time.

A resolver takes the open scope it is called from and returns the value. For a
service cached in that kind of scope, the resolver is generated Python source:
one function that checks the scope's cache and builds the service together
with the same-scope and transient parts of its subgraph, inline. Nothing is
introspected when it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from uno.di._graph import Node
from uno.di._keys import describe
from uno.di._registration import Dependency, ProviderKind
from uno.di._scope import Scope
from uno.di.exceptions import (
    AsyncResolutionRequired,
    MissingContextValue,
    ScopeNotActive,
)

if TYPE_CHECKING:
    from uno.di._resolver import Resolver

__all__ = ["AsyncResolve", "Compiler", "Overrides", "SyncResolve"]

SyncResolve = Callable[["Resolver"], Any]
AsyncResolve = Callable[["Resolver"], Awaitable[Any]]
Overrides = ContextVar[dict[Any, Any] | None]

_MISSING: Any = object()
_INLINE_BUDGET = 24


class Compiler:
    """Produce, and memoize, the sync and async resolver of each node for each kind of scope.

    Args:
        lock: the container's lock; app-scoped services are created under it.
        overrides: when given, every resolver first looks the key up in the
            overrides of the current context (the slower, test-only variant).
    """

    def __init__(self, lock: threading.RLock, overrides: Overrides | None = None) -> None:
        self._lock = lock
        self._overrides = overrides
        self._sync: dict[tuple[Any, Scope], SyncResolve] = {}
        self._async: dict[tuple[Any, Scope], AsyncResolve] = {}
        self._pending: dict[Any, asyncio.Event] = {}

    def sync(self, node: Node, kind: Scope) -> SyncResolve:
        """Return the function that resolves ``node`` synchronously in a scope of ``kind``."""
        found = self._sync.get((node.key, kind))
        if found is None:
            found = self._sync[node.key, kind] = self._wrap_sync(node, self._build_sync(node, kind))
        return found

    def async_(self, node: Node, kind: Scope) -> AsyncResolve:
        """Return the coroutine function that resolves an async ``node`` in a scope of ``kind``."""
        found = self._async.get((node.key, kind))
        if found is None:
            found = self._async[node.key, kind] = self._wrap_async(
                node, self._build_async(node, kind)
            )
        return found

    def _build_sync(self, node: Node, kind: Scope) -> SyncResolve:
        if node.needs_async:
            return _raiser(lambda: AsyncResolutionRequired(describe(node.key)))
        if node.kind is ProviderKind.INSTANCE and not node.cached:
            value: object = node.provider
            return lambda scope: value
        if node.kind is ProviderKind.CONTEXT:
            return _context_reader(node, kind)
        if node.cached and node.home is not kind:
            return self._delegate(node, kind, self.sync(node, node.home))
        writer = _Writer(self, kind, is_async=False)
        if node.cached and kind is Scope.APP:
            return writer.locked_function(node)
        return writer.function(node)

    def _build_async(self, node: Node, kind: Scope) -> AsyncResolve:
        if node.cached and node.home is not kind:
            home = self.async_(node, node.home)
            delegate = self._delegate(node, kind, home)

            async def resolve_elsewhere(scope: Resolver) -> Any:
                return await delegate(scope)

            return resolve_elsewhere
        writer = _Writer(self, kind, is_async=True)
        if node.cached and kind is Scope.APP:
            return self._once(node, writer.function(node, cache=False))
        resolve: AsyncResolve = writer.function(node)
        return resolve

    def _delegate(
        self, node: Node, kind: Scope, home: Callable[[Resolver], Any]
    ) -> Callable[[Resolver], Any]:
        """Resolve in the enclosing scope where ``node`` lives."""
        target = node.home
        if target is Scope.APP:
            return lambda scope: home(scope._root)
        if target.depth >= kind.depth or kind is Scope.APP:
            return _raiser(
                lambda: ScopeNotActive(
                    describe(node.key), target.name, f"asked from the {kind.name} scope"
                )
            )

        def resolve_in_enclosing(scope: Resolver) -> Any:
            owner = scope._parent
            while owner is not None and owner._kind is not target:
                owner = owner._parent
            if owner is None:
                raise ScopeNotActive(
                    describe(node.key), target.name, f"asked from the {kind.name} scope"
                )
            return home(owner)

        return resolve_in_enclosing

    def _once(self, node: Node, create: AsyncResolve) -> AsyncResolve:
        """Create an async app-scoped service once, however many tasks ask at the same time."""
        key, pending = node.key, self._pending

        async def resolve_once(scope: Resolver) -> Any:
            cache = scope._cache
            while True:
                value = cache.get(key, _MISSING)
                if value is not _MISSING:
                    return value
                event = pending.get(key)
                if event is None:
                    break
                await event.wait()
            event = pending[key] = asyncio.Event()
            try:
                value = await create(scope)
                cache[key] = value
                return value
            finally:
                del pending[key]
                event.set()

        return resolve_once

    def _wrap_sync(self, node: Node, resolve: SyncResolve) -> SyncResolve:
        overrides = self._overrides
        if overrides is None:
            return resolve
        key, closure = node.key, node.closure
        uncached = self._uncached_app(node, is_async=False)

        def resolve_overridden(scope: Resolver) -> Any:
            replaced = overrides.get()
            if replaced:
                value = replaced.get(key, _MISSING)
                if value is not _MISSING:
                    return value
                if uncached is not None and not closure.isdisjoint(replaced):
                    return uncached(scope._root)
            return resolve(scope)

        return resolve_overridden

    def _wrap_async(self, node: Node, resolve: AsyncResolve) -> AsyncResolve:
        overrides = self._overrides
        if overrides is None:
            return resolve
        key, closure = node.key, node.closure
        uncached = self._uncached_app(node, is_async=True)

        async def resolve_overridden(scope: Resolver) -> Any:
            replaced = overrides.get()
            if replaced:
                value = replaced.get(key, _MISSING)
                if value is not _MISSING:
                    return value
                if uncached is not None and not closure.isdisjoint(replaced):
                    return await uncached(scope._root)
            return await resolve(scope)

        return resolve_overridden

    def _uncached_app(self, node: Node, *, is_async: bool) -> Any:
        """Build app services that reach an override without caching them for everyone."""
        if not node.cached or node.home is not Scope.APP or len(node.closure) == 1:
            return None
        if node.needs_async and not is_async:
            return None
        return _Writer(self, Scope.APP, is_async=is_async).function(node, cache=False)

    @property
    def inlines(self) -> bool:
        """Return whether dependencies are built inline (not when overrides must be seen)."""
        return self._overrides is None


class _Writer:
    """Write the source of one resolver function and compile it."""

    def __init__(self, compiler: Compiler, kind: Scope, *, is_async: bool) -> None:
        self._compiler = compiler
        self._kind = kind
        self._is_async = is_async
        self._namespace: dict[str, Any] = {
            "MISSING": _MISSING,
            "LOCK": compiler._lock,
        }
        self._names: dict[int, str] = {}
        self._lines: list[str] = []
        self._variables = 0
        self._reads_cache = False
        self._budget = _INLINE_BUDGET if compiler.inlines and kind is not Scope.APP else 0
        self._fresh: dict[Any, str] | None = None
        """While writing the empty-cache branch: the variable of each service built so far."""
        self._calls_same_scope = False

    def function(self, node: Node, *, cache: bool = True) -> Callable[..., Any]:
        """Compile a resolver of ``node``; ``cache=False`` builds without storing the value."""
        if cache and node.cached:
            budget = self._budget
            result = self._cached(node, 2)
            checked, self._lines = self._lines, []
            # A scope's cache is empty until its first service: then nothing needs a lookup.
            # Kept only when the whole subgraph is inline, so no other resolver fills the
            # cache behind this one's back.
            self._budget, self._fresh = budget, {}
            fresh_result = self._cached(node, 2)
            fresh, self._lines, self._fresh = self._lines, [], None
            if self._calls_same_scope:
                self._lines = [line[4:] for line in checked]
            else:
                self._line(1, "if cache:")
                self._lines += checked
                self._line(1, "else:")
                self._lines += fresh
                self._line(2, f"{result} = {fresh_result}")
        else:
            result = self._variable()
            self._create(node, result, 1)
        return self._compile(result)

    def locked_function(self, node: Node) -> Callable[..., Any]:
        """Compile an app-scope resolver that creates the value once, under the lock."""
        self._reads_cache = True
        result = self._variable()
        key = self._ref(node.key)
        self._line(2, "with LOCK:")
        self._line(3, f"{result} = cache.get({key}, MISSING)")
        self._line(3, f"if {result} is MISSING:")
        self._create(node, result, 4)
        self._line(4, f"cache[{key}] = {result}")
        body, self._lines = self._lines, []
        self._line(1, f"{result} = cache.get({key}, MISSING)")
        self._line(1, f"if {result} is MISSING:")
        self._lines += body
        return self._compile(result)

    def _compile(self, result: str) -> Callable[..., Any]:
        header = f"{'async ' if self._is_async else ''}def resolve(scope):"
        prologue = ["cache = scope._cache"] if self._reads_cache else []
        source = "\n".join(
            [header, *(f"    {line}" for line in prologue), *self._lines, f"    return {result}"]
        )
        # Generated once at build time from registered objects held in the namespace
        # (never from strings a user passes), like dataclasses builds __init__.
        exec(source, self._namespace)  # noqa: S102
        resolve: Callable[..., Any] = self._namespace["resolve"]
        return resolve

    def _cached(self, node: Node, indent: int) -> str:
        self._reads_cache = True
        if self._fresh is not None:
            return self._built_once(node, indent)
        result = self._variable()
        key = self._ref(node.key)
        # `in` then a subscript: two bytecodes, no method call, cheaper than cache.get.
        self._line(indent, f"if {key} in cache:")
        self._line(indent + 1, f"{result} = cache[{key}]")
        self._line(indent, "else:")
        self._create(node, result, indent + 1)
        self._line(indent + 1, f"cache[{key}] = {result}")
        return result

    def _built_once(self, node: Node, indent: int) -> str:
        """Build ``node`` into the empty cache, or reuse the variable that already holds it."""
        assert self._fresh is not None
        result = self._fresh.get(node.key)
        if result is None:
            result = self._variable()
            self._create(node, result, indent)
            self._line(indent, f"cache[{self._ref(node.key)}] = {result}")
            self._fresh[node.key] = result
        return result

    def _value(self, node: Node, indent: int) -> str:
        if node.kind is ProviderKind.INSTANCE and not node.cached:
            return self._ref(node.provider)
        inline = self._budget > 0 and node.kind is not ProviderKind.CONTEXT
        if inline and not (node.needs_async and not self._is_async):
            if node.cached and node.home is self._kind:
                self._budget -= 1
                return self._cached(node, indent)
            if not node.cached:
                self._budget -= 1
                result = self._variable()
                self._create(node, result, indent)
                return result
        result = self._variable()
        if not (node.cached and node.home is not self._kind):
            self._calls_same_scope = True
        if self._is_async and node.needs_async:
            resolver = self._ref(self._compiler.async_(node, self._kind))
            self._line(indent, f"{result} = await {resolver}(scope)")
        else:
            resolver = self._ref(self._compiler.sync(node, self._kind))
            self._line(indent, f"{result} = {resolver}(scope)")
        return result

    def _create(self, node: Node, result: str, indent: int) -> None:
        arguments = [(d, self._value(n, indent)) for d, n in node.dependencies]
        if node.is_collection:
            self._line(indent, f"{result} = [{', '.join(v for _, v in arguments)}]")
        elif node.kind is ProviderKind.INSTANCE:
            self._line(indent, f"{result} = {self._ref(node.provider)}")
        else:
            call = f"{self._ref(node.provider)}({_arguments(arguments)})"
            if node.kind in (ProviderKind.GENERATOR, ProviderKind.ASYNC_GENERATOR):
                self._enter(node.kind, call, result, indent)
            else:
                statement = f"await {call}" if node.kind is ProviderKind.COROUTINE else call
                self._line(indent, f"{result} = {statement}")
        for decoration in node.decorations:
            wrapped = [(d, self._value(n, indent)) for d, n in decoration.dependencies]
            wrapped.append((decoration.inner, result))
            self._line(indent, f"{result} = {self._ref(decoration.wrapper)}({_arguments(wrapped)})")

    def _enter(self, kind: ProviderKind, call: str, result: str, indent: int) -> None:
        """Run a generator factory to its value and register it for finalization, inline.

        Inline rather than through a helper: an async helper would add a coroutine
        to every request that opens a resource.
        """
        generator, finalizers = self._variable(), self._variable()
        self._line(indent, f"{generator} = {call}")
        if kind is ProviderKind.ASYNC_GENERATOR:
            self._line(indent, f"{result} = await anext({generator})")
        else:
            self._line(indent, f"{result} = next({generator})")
        self._line(indent, f"{finalizers} = scope._finalizers")
        self._line(indent, f"if {finalizers} is None:")
        self._line(indent + 1, f"scope._finalizers = [{generator}]")
        self._line(indent, "else:")
        self._line(indent + 1, f"{finalizers}.append({generator})")

    def _ref(self, obj: object) -> str:
        name = self._names.get(id(obj))
        if name is None:
            name = self._names[id(obj)] = f"_{len(self._names)}"
            self._namespace[name] = obj
        return name

    def _variable(self) -> str:
        self._variables += 1
        return f"v{self._variables}"

    def _line(self, indent: int, text: str) -> None:
        self._lines.append("    " * indent + text)


def _arguments(arguments: list[tuple[Dependency, str]]) -> str:
    """Pass arguments by position while no parameter before them was left to its default."""
    ordered = sorted(arguments, key=lambda item: (item[0].position is None, item[0].position or 0))
    texts: list[str] = []
    keyword = False
    for dependency, value in ordered:
        keyword = keyword or dependency.position != len(texts)
        texts.append(f"{dependency.parameter}={value}" if keyword else value)
    return ", ".join(texts)


def _raiser(error: Callable[[], Exception]) -> Callable[[Resolver], Any]:
    def refuse(scope: Resolver) -> Any:
        raise error()

    return refuse


def _context_reader(node: Node, kind: Scope) -> SyncResolve:
    key, target = node.key, node.scope
    if target is not kind and (kind is Scope.APP or target.depth >= kind.depth):
        return _raiser(
            lambda: ScopeNotActive(describe(key), target.name, f"asked from the {kind.name} scope")
        )

    def read_context(scope: Resolver) -> Any:
        owner: Resolver | None = scope
        while owner is not None and owner._kind is not target:
            owner = owner._parent
        if owner is None:
            raise ScopeNotActive(describe(key), target.name, f"asked from the {kind.name} scope")
        value = owner._cache.get(key, _MISSING)
        if value is _MISSING:
            raise MissingContextValue(describe(key), target.name)
        return value

    return read_context
