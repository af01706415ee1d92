"""Discovery: mark providers with ``@injectable`` and find them by scanning a package."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Collection, Iterator
from types import ModuleType
from typing import Any, TypeVar, overload

from uno.di._scope import Scope

__all__ = ["discover", "injectable"]

P = TypeVar("P", bound=Callable[..., object])

_MARK = "__uno_di_injectable__"


@overload
def injectable(provider: P, /) -> P: ...
@overload
def injectable(
    *,
    provides: Any = None,
    scope: Scope = Scope.TRANSIENT,
    name: str | None = None,
    profile: str | Collection[str] | None = None,
    override: bool = False,
) -> Callable[[P], P]: ...
def injectable(
    provider: P | None = None,
    /,
    *,
    provides: Any = None,
    scope: Scope = Scope.TRANSIENT,
    name: str | None = None,
    profile: str | Collection[str] | None = None,
    override: bool = False,
) -> P | Callable[[P], P]:
    """Mark a class or factory for ``ContainerBuilder.scan``; takes ``add``'s options.

    The provider is returned unchanged, and subclasses are not marked.
    """
    options = {
        "provides": provides,
        "scope": scope,
        "name": name,
        "profile": profile,
        "override": override,
    }

    def mark(target: P) -> P:
        setattr(target, _MARK, options)
        return target

    return mark if provider is None else mark(provider)


def discover(package: ModuleType | str) -> Iterator[tuple[Callable[..., object], dict[str, Any]]]:
    """Import ``package`` and its submodules; yield each marked provider they define."""
    root = importlib.import_module(package) if isinstance(package, str) else package
    modules = [root]
    if hasattr(root, "__path__"):
        found = pkgutil.walk_packages(root.__path__, prefix=f"{root.__name__}.")
        modules.extend(importlib.import_module(info.name) for info in found)
    for module in modules:
        for value in list(vars(module).values()):
            options = getattr(value, "__dict__", {}).get(_MARK)
            if options is not None and getattr(value, "__module__", None) == module.__name__:
                yield value, options
