"""Service keys: what a type hint asks the container for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

__all__ = ["Named", "describe", "key_of", "named_key"]


@dataclass(frozen=True, slots=True)
class Named:
    """Qualify a service with a name: ``Annotated[Database, Named("replica")]``."""

    name: str


def named_key(service: Any, name: str | None) -> Any:
    """Return the key of ``service`` registered under ``name`` (or unnamed)."""
    return service if name is None else (service, name)


def key_of(hint: Any) -> Any:
    """Return the key a type hint asks for: the type, or ``(type, name)`` when Named.

    ``Annotated`` metadata other than ``Named`` is ignored, so markers such as
    ``Injected`` leave the key unchanged.
    """
    if get_origin(hint) is Annotated:
        inner, *metadata = get_args(hint)
        for item in metadata:
            if isinstance(item, Named):
                return (key_of(inner), item.name)
        return key_of(inner)
    return hint


def describe(key: Any) -> str:
    """Return a short readable name for a key, for error messages."""
    if isinstance(key, tuple):
        service, name = key
        return f"{describe(service)} named {name!r}"
    origin, args = get_origin(key), get_args(key)
    if origin is not None and args:
        return f"{describe(origin)}[{', '.join(describe(arg) for arg in args)}]"
    if isinstance(key, type):
        return key.__qualname__
    return repr(key).replace("typing.", "")
