"""The builder: collect registrations, then validate and compile them into a container."""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any, get_origin

from uno.di._container import Container
from uno.di._discovery import discover
from uno.di._graph import Graph
from uno.di._keys import describe, key_of, named_key
from uno.di._registration import ProviderKind, Registration, kind_of, provided_type
from uno.di._scope import Scope
from uno.di.exceptions import DuplicateRegistration, MissingDependency, RegistrationError

__all__ = ["ContainerBuilder"]


class ContainerBuilder:
    """Collect registrations; ``build()`` validates the graph and returns a ``Container``.

    Registrations are not checked against each other until ``build``, so
    modules may register in any order and conditional registrations of the
    same service (one per profile) do not collide.
    """

    def __init__(self) -> None:
        self._registrations: list[Registration] = []
        self._decorations: dict[Any, list[Callable[..., object]]] = {}

    def add(
        self,
        provider: Callable[..., object],
        *,
        provides: Any = None,
        scope: Scope = Scope.TRANSIENT,
        name: str | None = None,
        profile: str | Collection[str] | None = None,
        when: Callable[[], bool] | None = None,
        override: bool = False,
    ) -> None:
        """Register a class or a factory (sync, async, generator or async generator).

        Args:
            provider: a class (auto-wired from its ``__init__`` hints) or a factory
                function (auto-wired from its parameters' hints).
            provides: the key it is resolved as (an interface such as a Protocol or
                ABC); by default the class itself or the factory's return hint.
                A generic class registered unsubscripted serves every
                ``Generic[Arg]`` asked for.
            scope: how long a value lives; ``Scope.TRANSIENT`` by default.
            name: qualify it; inject with ``Annotated[T, Named(name)]``.
            profile: build it only for this profile (or one of these profiles).
            when: build it only when this returns true at build time.
            override: replace an earlier registration of the same key.
        """
        key = key_of(provides) if provides is not None else provided_type(provider)
        self._registrations.append(
            Registration(
                key=named_key(key, name),
                provider=provider,
                kind=kind_of(provider),
                scope=scope,
                profiles=_profiles(profile),
                when=when,
                override=override,
            )
        )

    def add_instance(
        self,
        instance: object,
        *,
        provides: Any = None,
        name: str | None = None,
        profile: str | Collection[str] | None = None,
        when: Callable[[], bool] | None = None,
        override: bool = False,
    ) -> None:
        """Register an existing object, resolved as itself (the app scope never finalizes it)."""
        key = key_of(provides) if provides is not None else type(instance)
        self._registrations.append(
            Registration(
                key=named_key(key, name),
                provider=instance,
                kind=ProviderKind.INSTANCE,
                scope=Scope.APP,
                profiles=_profiles(profile),
                when=when,
                override=override,
            )
        )

    def add_context(
        self, service: Any, *, scope: Scope = Scope.REQUEST, name: str | None = None
    ) -> None:
        """Declare a value given when a scope opens: ``container.scope(context={T: value})``."""
        self._registrations.append(
            Registration(
                key=named_key(key_of(service), name),
                provider=None,
                kind=ProviderKind.CONTEXT,
                scope=scope,
            )
        )

    def decorate(
        self, service: Any, decorator: Callable[..., object], *, name: str | None = None
    ) -> None:
        """Wrap every resolved ``service`` with ``decorator``.

        ``decorator`` receives the service through its parameter annotated with
        the service's type; its other parameters are injected. Decorators apply
        in the order they were added (the first one wraps innermost).
        """
        key = named_key(key_of(service), name)
        self._decorations.setdefault(key, []).append(decorator)

    def scan(self, package: ModuleType | str) -> None:
        """Register every ``@injectable`` class and factory defined in a package's modules."""
        for provider, options in discover(package):
            self.add(provider, **options)

    def build(self, *, profile: str | None = None) -> Container:
        """Validate every registration active for ``profile`` and compile the container.

        Raises:
            DuplicateRegistration: two active registrations provide one key and the
                later one does not pass ``override=True``.
            MissingDependency: something needed is not registered (the message
                names the whole chain).
            DependencyCycle: services depend on each other in a loop.
            ScopeViolation: a service depends on one that lives shorter.
        """
        registrations: dict[Any, Registration] = {}
        open_generics: dict[Any, Registration] = {}
        members: dict[Any, list[Any]] = {}
        for registration in self._registrations:
            if not registration.is_active(profile):
                continue
            target = registrations
            if _is_open_generic(registration):
                target = open_generics
            existing = target.get(registration.key)
            if existing is not None and not registration.override:
                raise DuplicateRegistration(
                    describe(registration.key), existing.origin, registration.origin
                )
            target[registration.key] = registration
            base = registration.key[0] if isinstance(registration.key, tuple) else registration.key
            if existing is None:
                members.setdefault(base, []).append(registration.key)
        for key in self._decorations:
            if key not in registrations and key not in open_generics:
                raise MissingDependency([f"decorate({describe(key)})"], describe(key))
        graph = Graph(registrations, self._decorations, open_generics, members)
        return Container(graph, {r.scope for r in registrations.values()} - {Scope.TRANSIENT})


def _is_open_generic(registration: Registration) -> bool:
    provider, key = registration.provider, registration.key
    return (
        isinstance(provider, type)
        and bool(getattr(provider, "__parameters__", ()))
        and get_origin(key) is None
        and bool(getattr(key, "__parameters__", ()))
    )


def _profiles(profile: str | Collection[str] | None) -> frozenset[str] | None:
    if profile is None:
        return None
    if isinstance(profile, str):
        return frozenset({profile})
    if not profile:
        raise RegistrationError("profile=... is empty; pass a profile name or leave it out.")
    return frozenset(profile)
