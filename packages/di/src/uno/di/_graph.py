"""The dependency graph: registrations joined by their dependencies, validated."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

from uno.di._keys import describe
from uno.di._registration import Dependency, ProviderKind, Registration, dependencies_of
from uno.di._scope import Scope
from uno.di.exceptions import (
    DependencyCycle,
    MissingDependency,
    RegistrationError,
    ScopeViolation,
)

__all__ = ["Decoration", "Graph", "Node"]


@dataclass(frozen=True, slots=True)
class Decoration:
    """A wrapper applied to a service: its callable, inner parameter and other inputs."""

    wrapper: Callable[..., object]
    inner: Dependency
    dependencies: tuple[tuple[Dependency, Node], ...]


@dataclass(eq=False, slots=True)
class Node:
    """One resolvable key with everything the compiler needs, found at build time.

    ``home`` is where a value lives: its scope, or for transient services and
    collections the deepest scope among their dependencies (app when none).
    ``closure`` holds every key this node reaches, itself included.
    """

    key: Any
    kind: ProviderKind | None
    provider: Any
    scope: Scope
    dependencies: tuple[tuple[Dependency, Node], ...] = ()
    decorations: tuple[Decoration, ...] = ()
    needs_async: bool = False
    home: Scope = Scope.APP
    closure: frozenset[Any] = field(default_factory=frozenset)

    @property
    def is_collection(self) -> bool:
        """Return whether this node gathers every implementation of a type into a list."""
        return self.kind is None

    @property
    def cached(self) -> bool:
        """Return whether a value is stored in its scope (rather than made per injection).

        A registered instance is its own value, unless decorators wrap it (once).
        """
        if self.kind is ProviderKind.INSTANCE:
            return bool(self.decorations)
        return self.scope is not Scope.TRANSIENT


class Graph:
    """Build and validate nodes on demand, memoizing them.

    Args:
        registrations: the active registration of every key.
        decorations: wrappers per key, innermost first.
        open_generics: generic classes registered unsubscripted, by the key they provide.
        members: the keys registered for each type, for ``list[T]`` collections.
    """

    def __init__(
        self,
        registrations: Mapping[Any, Registration],
        decorations: Mapping[Any, Sequence[Callable[..., object]]],
        open_generics: Mapping[Any, Registration],
        members: Mapping[Any, Sequence[Any]],
    ) -> None:
        self._registrations = dict(registrations)
        self._decorations = decorations
        self._open_generics = open_generics
        self._members = members
        self._nodes: dict[Any, Node] = {}

    @property
    def keys(self) -> tuple[Any, ...]:
        """Return every key registered directly."""
        return tuple(self._registrations)

    def provides(self, key: Any) -> bool:
        """Return whether ``key`` can be resolved (registered, generic or a collection)."""
        return (
            key in self._registrations
            or self._collection_of(key) is not None
            or get_origin(key) in self._open_generics
        )

    def node(self, key: Any, chain: tuple[Any, ...] = ()) -> Node:
        """Return the validated node of ``key``.

        Raises:
            MissingDependency: ``key`` or something it needs is not provided.
            DependencyCycle: ``key`` depends on itself.
            ScopeViolation: a service depends on one that lives shorter.
        """
        found = self._nodes.get(key)
        if found is not None:
            return found
        if key in chain:
            cycle = [*chain[chain.index(key) :], key]
            raise DependencyCycle([describe(k) for k in cycle])
        chain = (*chain, key)
        registration = self._registrations.get(key)
        if registration is None:
            registration = self._close_generic(key)
        if registration is not None:
            node = self._service_node(registration, chain)
        elif (member_type := self._collection_of(key)) is not None:
            members = self._members.get(member_type, ())
            node = self._finish(
                Node(
                    key=key,
                    kind=None,
                    provider=None,
                    scope=Scope.TRANSIENT,
                    dependencies=tuple(
                        (_member(k), self.node(k, chain)) for k in members if k != key
                    ),
                )
            )
        else:
            raise MissingDependency([describe(k) for k in chain[:-1]], describe(key))
        self._nodes[key] = node
        return node

    def _service_node(self, registration: Registration, chain: tuple[Any, ...]) -> Node:
        key = registration.key
        substitutions: dict[Any, Any] = {}
        provider = registration.provider
        if get_origin(key) is not None and key not in self._registrations:
            parameters = getattr(provider, "__parameters__", ())
            substitutions = dict(zip(parameters, get_args(key), strict=False))
            provider = provider[tuple(get_args(key))] if parameters else provider
        dependencies: tuple[tuple[Dependency, Node], ...] = ()
        if registration.kind not in {ProviderKind.INSTANCE, ProviderKind.CONTEXT}:
            dependencies = self._resolve(
                dependencies_of(registration.provider, substitutions), chain
            )
        wrappers = self._decorations.get(key, ())
        if wrappers and registration.kind is ProviderKind.CONTEXT:
            raise RegistrationError(
                f"{describe(key)} is a context value and cannot be decorated; decorate the "
                "services that use it, or wrap the value before opening the scope."
            )
        decorations = tuple(self._decoration(key, wrapper, chain) for wrapper in wrappers)
        return self._finish(
            Node(
                key=key,
                kind=registration.kind,
                provider=provider,
                scope=registration.scope,
                dependencies=dependencies,
                decorations=decorations,
            )
        )

    def _decoration(
        self, key: Any, wrapper: Callable[..., object], chain: tuple[Any, ...]
    ) -> Decoration:
        parameters = dependencies_of(wrapper)
        inner = next((d for d in parameters if d.key == key), None)
        if inner is None:
            raise RegistrationError(
                f"Decorator {getattr(wrapper, '__qualname__', wrapper)!r} of {describe(key)} "
                f"has no parameter annotated {describe(key)} to receive the decorated service. "
                "Add one."
            )
        others = tuple(d for d in parameters if d is not inner)
        return Decoration(wrapper, inner, self._resolve(others, chain))

    def _resolve(
        self, dependencies: Sequence[Dependency], chain: tuple[Any, ...]
    ) -> tuple[tuple[Dependency, Node], ...]:
        return tuple(
            (dependency, self.node(dependency.key, chain))
            for dependency in dependencies
            if not dependency.optional or self.provides(dependency.key)
        )

    def _finish(self, node: Node) -> Node:
        inputs = [n for _, n in node.dependencies] + [
            n for d in node.decorations for _, n in d.dependencies
        ]
        node.needs_async = node.kind in {
            ProviderKind.COROUTINE,
            ProviderKind.ASYNC_GENERATOR,
        } or any(n.needs_async for n in inputs)
        node.closure = frozenset({node.key}).union(*(n.closure for n in inputs))
        deepest = max((n.home for n in inputs), key=lambda s: s.depth, default=Scope.APP)
        if node.scope is Scope.TRANSIENT:
            node.home = deepest
        else:
            node.home = node.scope
            for dependency in inputs:
                if not _outlives_or_equals(dependency.home, node.scope):
                    culprit = _deepest_holder(dependency)
                    raise ScopeViolation(
                        describe(node.key),
                        node.scope.name,
                        describe(culprit.key),
                        culprit.home.name,
                    )
        return node

    def _close_generic(self, key: Any) -> Registration | None:
        generic = self._open_generics.get(get_origin(key))
        if generic is None:
            return None
        return Registration(
            key=key, provider=generic.provider, kind=generic.kind, scope=generic.scope
        )

    @staticmethod
    def _collection_of(key: Any) -> Any:
        if get_origin(key) is list and len(get_args(key)) == 1:
            return get_args(key)[0]
        return None


def _member(key: Any) -> Dependency:
    return Dependency("", key, position=0, optional=False)


def _outlives_or_equals(dependency: Scope, service: Scope) -> bool:
    return dependency is Scope.APP or dependency is service or dependency.depth < service.depth


def _deepest_holder(node: Node) -> Node:
    """Return the scoped node that pins a transient dependency to its home scope."""
    while node.scope is Scope.TRANSIENT:
        inputs = [n for _, n in node.dependencies] + [
            n for d in node.decorations for _, n in d.dependencies
        ]
        node = next(n for n in inputs if n.home is node.home)
    return node
