"""A validated, compiled dependency-injection container.

Register providers on a builder, build once (the graph is validated and
compiled), then resolve from scopes::

    from uno.di import ContainerBuilder, Scope

    class Settings: ...

    class Repository:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings

    builder = ContainerBuilder()
    builder.add(Settings, scope=Scope.APP)
    builder.add(Repository, scope=Scope.REQUEST)
    container = builder.build()
    with container.scope(Scope.REQUEST) as scope:
        assert scope.get(Repository).settings is container.get(Settings)
"""

from uno.di import exceptions
from uno.di._builder import ContainerBuilder
from uno.di._container import Container
from uno.di._discovery import injectable
from uno.di._injection import Injected, inject
from uno.di._keys import Named
from uno.di._resolver import Resolver, ScopedContainer
from uno.di._scope import Scope
from uno.di.exceptions import (
    AsyncResolutionRequired,
    AsyncScopeRequired,
    ContainerValidationError,
    DependencyCycle,
    DuplicateRegistration,
    FinalizationError,
    MissingContextValue,
    MissingDependency,
    NoActiveScope,
    RegistrationError,
    ResolutionError,
    ScopeClosed,
    ScopeNestingError,
    ScopeNotActive,
    ScopeViolation,
    UnknownService,
    UnoDIError,
)

__all__ = [
    "AsyncResolutionRequired",
    "AsyncScopeRequired",
    "Container",
    "ContainerBuilder",
    "ContainerValidationError",
    "DependencyCycle",
    "DuplicateRegistration",
    "FinalizationError",
    "Injected",
    "MissingContextValue",
    "MissingDependency",
    "Named",
    "NoActiveScope",
    "RegistrationError",
    "ResolutionError",
    "Resolver",
    "Scope",
    "ScopeClosed",
    "ScopeNestingError",
    "ScopeNotActive",
    "ScopeViolation",
    "ScopedContainer",
    "UnknownService",
    "UnoDIError",
    "exceptions",
    "inject",
    "injectable",
]
