"""Registrations and the build-time introspection of their providers."""

from __future__ import annotations

import enum
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from uno.di._keys import describe, key_of
from uno.di._scope import Scope
from uno.di.exceptions import RegistrationError

__all__ = ["Dependency", "ProviderKind", "Registration", "dependencies_of", "provided_type"]

_GENERATOR_RETURNS = (Generator, Iterator, Iterable)
_ASYNC_GENERATOR_RETURNS = (AsyncGenerator, AsyncIterator, AsyncIterable)


class ProviderKind(enum.Enum):
    """How a provider produces its value."""

    CALLABLE = "callable"
    COROUTINE = "coroutine"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"
    INSTANCE = "instance"
    CONTEXT = "context"


@dataclass(frozen=True, slots=True)
class Dependency:
    """One parameter of a provider that the container fills.

    ``position`` is the parameter's index when it may be passed positionally.
    """

    parameter: str
    key: Any
    position: int | None
    optional: bool


@dataclass(frozen=True, slots=True)
class Registration:
    """What the builder was told: a provider, the key it provides and when."""

    key: Any
    provider: Any
    kind: ProviderKind
    scope: Scope
    profiles: frozenset[str] | None = None
    when: Callable[[], bool] | None = None
    override: bool = False

    @property
    def origin(self) -> str:
        """Name the provider in error messages."""
        if self.kind in {ProviderKind.INSTANCE, ProviderKind.CONTEXT}:
            return f"{self.kind.value} {describe(self.key)}"
        return _qualname(self.provider)

    def is_active(self, profile: str | None) -> bool:
        """Return whether this registration takes part in a build for ``profile``."""
        if self.profiles is not None and profile not in self.profiles:
            return False
        return self.when is None or self.when()


def kind_of(provider: Callable[..., object]) -> ProviderKind:
    """Return how ``provider`` produces its value."""
    if isinstance(provider, type):
        return ProviderKind.CALLABLE
    if inspect.isasyncgenfunction(provider):
        return ProviderKind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(provider):
        return ProviderKind.GENERATOR
    if inspect.iscoroutinefunction(provider):
        return ProviderKind.COROUTINE
    return ProviderKind.CALLABLE


def provided_type(provider: Callable[..., object]) -> Any:
    """Return the key a provider produces: the class itself, or a factory's return hint."""
    if isinstance(provider, type):
        return provider
    hints = _hints(provider)
    if "return" not in hints or hints["return"] in {None, type(None)}:
        raise RegistrationError(
            f"{_qualname(provider)} has no return type hint, so the container cannot tell "
            "what it provides. Annotate its return type or pass provides=..."
        )
    returned = hints["return"]
    kind = kind_of(provider)
    wrappers = {
        ProviderKind.GENERATOR: _GENERATOR_RETURNS,
        ProviderKind.ASYNC_GENERATOR: _ASYNC_GENERATOR_RETURNS,
    }.get(kind)
    if wrappers is not None:
        if get_origin(returned) not in wrappers:
            raise RegistrationError(
                f"{_qualname(provider)} is a {kind.value} function; annotate its return as "
                f"{'AsyncIterator' if kind is ProviderKind.ASYNC_GENERATOR else 'Iterator'}"
                "[Service] or pass provides=..."
            )
        returned = get_args(returned)[0]
    return key_of(returned)


def dependencies_of(
    provider: Callable[..., object], substitutions: Mapping[Any, Any] | None = None
) -> tuple[Dependency, ...]:
    """Read the parameters of a provider (a class's ``__init__``) as dependencies.

    Args:
        provider: a class or a function.
        substitutions: type variables to replace, when ``provider`` is a generic
            class resolved for concrete arguments.

    Raises:
        RegistrationError: a parameter without default has no type hint, or a
            hint names something that cannot be imported.
    """
    target: Callable[..., object] = provider
    if isinstance(provider, type):
        target = next(vars(c)["__init__"] for c in provider.__mro__ if "__init__" in vars(c))
        if target is object.__init__:
            return ()
    hints = _hints(target)
    signature = inspect.signature(provider)
    dependencies = []
    for index, parameter in enumerate(signature.parameters.values()):
        if parameter.kind in {parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD}:
            continue
        optional = parameter.default is not parameter.empty
        if parameter.name not in hints:
            if optional:
                continue
            raise RegistrationError(
                f"Parameter {parameter.name!r} of {_qualname(provider)} has no type hint and no "
                "default, so the container cannot fill it. Annotate it."
            )
        hint = _substitute(hints[parameter.name], substitutions or {})
        dependencies.append(
            Dependency(
                parameter=parameter.name,
                key=key_of(hint),
                position=None if parameter.kind is parameter.KEYWORD_ONLY else index,
                optional=optional,
            )
        )
    return tuple(dependencies)


def _substitute(hint: Any, substitutions: Mapping[Any, Any]) -> Any:
    if isinstance(hint, TypeVar):
        return substitutions.get(hint, hint)
    parameters = getattr(hint, "__parameters__", ())
    if parameters and get_origin(hint) is not None:
        return hint[tuple(substitutions.get(p, p) for p in parameters)]
    return hint


def _hints(target: Callable[..., object]) -> dict[str, Any]:
    try:
        return get_type_hints(target, include_extras=True)
    except NameError as error:
        raise RegistrationError(
            f"Cannot read the type hints of {_qualname(target)}: {error}. Define the named "
            "type at module level (string annotations are resolved in the module's globals)."
        ) from error


def _qualname(target: object) -> str:
    return str(getattr(target, "__qualname__", repr(target)))
