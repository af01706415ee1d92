"""The built container: the app scope, its compiled resolver tables and test overrides."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from uno.di._compiler import AsyncResolve, Compiler, SyncResolve
from uno.di._graph import Graph, Node
from uno.di._keys import describe, key_of, named_key
from uno.di._registration import ProviderKind
from uno.di._resolver import ClosedScopes, Resolver
from uno.di._scope import Scope
from uno.di.exceptions import RegistrationError, UnknownService

__all__ = ["Container"]

T = TypeVar("T")

_SyncTable = dict[Any, SyncResolve]
_AsyncTable = dict[Any, AsyncResolve]


class Container(Resolver):
    """The app scope of a validated graph; made by ``ContainerBuilder.build()``.

    Resolve app-scoped services from it, open nested scopes with
    ``container.scope(...)``, and close it (``with``/``async with``, ``close()``
    or ``aclose()``) to finalize app-scoped generator factories.
    """

    __slots__ = (
        "_compilers",
        "_context_keys",
        "_graph",
        "_installed",
        "_lock",
        "_overrides",
        "_overriding",
        "_tables",
    )

    def __init__(self, graph: Graph, kinds: Iterable[Scope]) -> None:
        self._graph = graph
        self._lock = threading.RLock()
        self._overrides: ContextVar[dict[Any, Any] | None] = ContextVar(
            "uno.di.overrides", default=None
        )
        self._compilers = [Compiler(self._lock)]
        self._overriding = 0
        self._installed: dict[Any, Node] = {key: graph.node(key) for key in graph.keys}
        context_keys: dict[Scope, set[Any]] = {}
        for key, node in self._installed.items():
            if node.kind is ProviderKind.CONTEXT:
                context_keys.setdefault(node.home, set()).add(key)
        self._context_keys = {kind: frozenset(keys) for kind, keys in context_keys.items()}
        self._tables: dict[Scope, tuple[_SyncTable, _AsyncTable]] = {}
        self._root = self
        self._parent = None
        self._kind = Scope.APP
        self._cache = {}
        self._finalizers = None
        self._token = None
        for kind in {Scope.APP, Scope.REQUEST, *kinds}:
            self._tables_for(kind)
        self._sync, self._async = self._tables[Scope.APP]

    @contextmanager
    def override(self, service: Any, value: object, *, name: str | None = None) -> Iterator[None]:
        """Resolve ``service`` as ``value`` inside this block, in this context only.

        Concurrent tasks and threads outside the block keep the registered
        service. App-scoped services that depend on an overridden one are built
        afresh inside the block (not cached). Values already cached in an open
        scope stay: open the scope inside the block.

        Raises:
            UnknownService: nothing provides ``service``, so there is nothing to override.
            RegistrationError: ``value`` is not an instance of ``service``.
        """
        key = key_of(named_key(service, name))
        if not self._graph.provides(key):
            raise UnknownService(describe(key))
        checked = key[0] if isinstance(key, tuple) else key
        if (
            isinstance(checked, type)
            and not getattr(checked, "_is_protocol", False)
            and not isinstance(value, checked)
        ):
            raise RegistrationError(
                f"Cannot override {describe(key)} with {value!r}: it is not an instance of "
                f"{describe(checked)}. Pass an instance of it (or of a subclass)."
            )
        with self._lock:
            self._overriding += 1
            if self._overriding == 1:
                self._switch(overriding=True)
        token = self._overrides.set({**(self._overrides.get() or {}), key: value})
        try:
            yield
        finally:
            self._overrides.reset(token)
            with self._lock:
                self._overriding -= 1
                if self._overriding == 0:
                    self._switch(overriding=False)

    def _closing(self) -> list[Any]:
        # After close, opening a scope raises ScopeClosed instead of reaching finalized services.
        self._tables = ClosedScopes()
        return super()._closing()

    def _compiler(self) -> Compiler:
        if self._overriding == 0:
            return self._compilers[0]
        if len(self._compilers) == 1:
            self._compilers.append(Compiler(self._lock, self._overrides))
        return self._compilers[1]

    def _switch(self, *, overriding: bool) -> None:
        compiler = self._compiler() if overriding else self._compilers[0]
        for kind, tables in self._tables.items():
            for key, node in self._installed.items():
                self._fill(compiler, tables, key, node, kind)

    def _tables_for(self, kind: Scope) -> tuple[_SyncTable, _AsyncTable]:
        """Return (compiling on first use) the resolver tables of scopes of ``kind``."""
        with self._lock:
            tables = self._tables.get(kind)
            if tables is None:
                tables = ({}, {})
                compiler = self._compiler()
                for key, node in self._installed.items():
                    self._fill(compiler, tables, key, node, kind)
                self._tables[kind] = tables
            return tables

    def _install(self, key: Any, kind: Scope) -> tuple[SyncResolve, AsyncResolve | None]:
        """Compile a key first asked for after build (``Repo[Order]``, ``list[T]``, Annotated).

        Raises:
            UnknownService: nothing provides ``key``.
            ContainerValidationError: its graph does not validate.
        """
        with self._lock:
            canonical = key_of(key)
            if not self._graph.provides(canonical):
                raise UnknownService(describe(canonical))
            node = self._installed[key] = self._graph.node(canonical)
            compiler = self._compiler()
            for table_kind, tables in self._tables.items():
                self._fill(compiler, tables, key, node, table_kind)
            sync, async_ = self._tables[kind]
            return sync[key], async_.get(key)

    @staticmethod
    def _fill(
        compiler: Compiler,
        tables: tuple[_SyncTable, _AsyncTable],
        key: Any,
        node: Node,
        kind: Scope,
    ) -> None:
        tables[0][key] = compiler.sync(node, kind)
        if node.needs_async:
            tables[1][key] = compiler.async_(node, kind)
