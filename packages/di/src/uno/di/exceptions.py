"""Errors raised by uno.di.

Every error carries a stable ``code`` (safe to match on) and a message that
says what happened and what to do next::

    UnoDIError                      di.error
    ├── RegistrationError           di.invalid_registration
    │   └── DuplicateRegistration   di.duplicate_registration
    ├── ContainerValidationError    di.invalid_container
    │   ├── MissingDependency       di.missing_dependency
    │   ├── DependencyCycle         di.cycle
    │   └── ScopeViolation          di.scope_violation
    ├── ResolutionError             di.resolution_error
    │   ├── UnknownService          di.unknown_service
    │   ├── AsyncResolutionRequired di.async_required
    │   ├── AsyncScopeRequired      di.async_scope_required
    │   ├── ScopeNotActive          di.scope_not_active
    │   ├── ScopeClosed             di.scope_closed
    │   ├── ScopeNestingError       di.invalid_scope_nesting
    │   ├── NoActiveScope           di.no_active_scope
    │   └── MissingContextValue     di.missing_context_value
    └── FinalizationError           di.finalization_failed   (also an ExceptionGroup)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "AsyncResolutionRequired",
    "AsyncScopeRequired",
    "ContainerValidationError",
    "DependencyCycle",
    "DuplicateRegistration",
    "FinalizationError",
    "MissingContextValue",
    "MissingDependency",
    "NoActiveScope",
    "RegistrationError",
    "ResolutionError",
    "ScopeClosed",
    "ScopeNestingError",
    "ScopeNotActive",
    "ScopeViolation",
    "UnknownService",
    "UnoDIError",
]


class UnoDIError(Exception):
    """Root of every error raised by uno.di."""

    code: ClassVar[str] = "di.error"


class RegistrationError(UnoDIError, TypeError):
    """A registration cannot be used as written (no return type, unreadable hints...)."""

    code = "di.invalid_registration"


class DuplicateRegistration(RegistrationError):
    """A second registration provides a service that is already registered."""

    code = "di.duplicate_registration"

    def __init__(self, service: str, existing: str, new: str) -> None:
        self.service = service
        self.existing = existing
        self.new = new
        super().__init__(
            f"{service} is already provided by {existing}; cannot register {new} too. "
            "Pass override=True to replace it, give one of them a name (Named), or give "
            "them different profiles."
        )


class ContainerValidationError(UnoDIError):
    """The registrations do not form a graph that can be resolved."""

    code = "di.invalid_container"


class MissingDependency(ContainerValidationError):
    """A service depends on something that nothing provides."""

    code = "di.missing_dependency"

    def __init__(self, chain: Sequence[str], missing: str) -> None:
        self.chain = tuple(chain)
        self.missing = missing
        path = " → ".join([*self.chain, f"{missing} (missing)"])
        super().__init__(
            f"Nothing provides {missing}, needed by {path}. Register it, e.g. "
            f"builder.add({missing.split('[', maxsplit=1)[0]}, scope=...), or provide it as "
            "context with builder.add_context(...)."
        )


class DependencyCycle(ContainerValidationError):
    """Services depend on each other in a loop."""

    code = "di.cycle"

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            f"Dependency cycle: {' → '.join(self.cycle)}. Break it: inject a factory or "
            "move the shared part into a third service."
        )


class ScopeViolation(ContainerValidationError):
    """A long-lived service depends on a shorter-lived one."""

    code = "di.scope_violation"

    def __init__(self, service: str, scope: str, dependency: str, dependency_scope: str) -> None:
        self.service = service
        self.scope = scope
        self.dependency = dependency
        self.dependency_scope = dependency_scope
        super().__init__(
            f"{service} ({scope} scope) depends on {dependency} ({dependency_scope} scope), "
            f"which would outlive its scope inside {service}. Give {service} the "
            f"{dependency_scope} scope, or {dependency} a longer-lived one."
        )


class ResolutionError(UnoDIError):
    """A service could not be resolved from a built container."""

    code = "di.resolution_error"


class UnknownService(ResolutionError, LookupError):
    """A service was asked for that nothing provides."""

    code = "di.unknown_service"

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(
            f"Nothing provides {service}. Register it on the ContainerBuilder before build()."
        )


class AsyncResolutionRequired(ResolutionError):
    """A service was asked for synchronously, but an async factory builds it."""

    code = "di.async_required"

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(
            f"{service} needs an async factory (itself or a dependency), so it cannot be "
            "resolved with get(). Use `await scope.aget(...)` instead."
        )


class AsyncScopeRequired(ResolutionError):
    """A scope holding async generator factories was closed synchronously."""

    code = "di.async_scope_required"

    def __init__(self, finalizer: str) -> None:
        self.finalizer = finalizer
        super().__init__(
            f"{finalizer} is an async generator factory and cannot be finalized by a sync "
            "close. Open the scope with `async with` (or call `await scope.aclose()`)."
        )


class ScopeNotActive(ResolutionError):
    """A service lives in a scope that is not open around the caller."""

    code = "di.scope_not_active"

    def __init__(self, service: str, scope: str, where: str) -> None:
        self.service = service
        self.scope = scope
        self.where = where
        super().__init__(
            f"{service} lives in the {scope} scope, which is not open here ({where}). "
            f"Open it first: {_opening(scope)}, and resolve from that scope."
        )


class ScopeClosed(ResolutionError):
    """A scope was used after it was closed."""

    code = "di.scope_closed"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__(
            f"This {scope} scope is closed and its services are finalized. Resolve from an "
            "open scope."
        )


class ScopeNestingError(ResolutionError):
    """A scope was opened inside one that is not shallower than it."""

    code = "di.invalid_scope_nesting"

    def __init__(self, scope: str, depth: int, parent: str, parent_depth: int) -> None:
        self.scope = scope
        self.parent = parent
        super().__init__(
            f"Cannot open the {scope} scope (depth {depth}) inside the {parent} scope "
            f"(depth {parent_depth}): a nested scope must be deeper. Open it from a "
            "shallower scope, or give it a larger depth."
        )


class NoActiveScope(ResolutionError):
    """An @inject function was called outside every open scope."""

    code = "di.no_active_scope"

    def __init__(self, function: str) -> None:
        self.function = function
        super().__init__(
            f"{function} takes injected parameters, but no container scope is open in this "
            "context. Call it inside `with container.scope(...)` or `async with ...`, or pass "
            "the injected arguments yourself."
        )


class MissingContextValue(ResolutionError):
    """A scope was opened without a context value that a service needs."""

    code = "di.missing_context_value"

    def __init__(self, service: str, scope: str) -> None:
        self.service = service
        self.scope = scope
        super().__init__(
            f"{service} is context of the {scope} scope but was not given when it was opened. "
            f"Pass it: {_opening(scope, f'context={{{service}: value}}')}."
        )


def _opening(scope: str, context: str = "") -> str:
    """Show how to open a scope: the request scope by name, a custom one through its object."""
    kind = "Scope.REQUEST" if scope == "request" else f"<your {scope!r} Scope>"
    arguments = ", ".join(part for part in (kind, context) if part)
    return f"`with container.scope({arguments}) as scope:`"


class FinalizationError(UnoDIError, ExceptionGroup[Exception]):
    """One or more finalizers raised when a scope closed; every finalizer still ran."""

    code = "di.finalization_failed"
    scope: str

    def __new__(cls, scope: str, errors: Sequence[Exception]) -> FinalizationError:
        self = super().__new__(
            cls,
            f"{len(errors)} finalizer(s) of the {scope} scope raised; every other finalizer "
            "ran. Fix the failing generator factories",
            list(errors),
        )
        self.scope = scope
        return self

    def __init__(self, scope: str, errors: Sequence[Exception]) -> None:
        super().__init__(scope, errors)

    def derive(self, excs: Sequence[Exception]) -> FinalizationError:  # type: ignore[override]
        """Keep the type and scope when ``except*`` splits the group."""
        return FinalizationError(self.scope, excs)
