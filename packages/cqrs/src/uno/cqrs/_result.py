"""``Result``: a handler's success or typed failure, as a value to match on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeAlias, TypeVar

__all__ = ["Err", "Ok", "Result"]

T = TypeVar("T")
E = TypeVar("E", bound=Exception)
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    """A success that carries ``value``; ``match result: case Ok(value): ...``."""

    value: T

    def is_ok(self) -> bool:
        """Return ``True``."""
        return True

    def unwrap(self) -> T:
        """Return the value."""
        return self.value

    def map(self, fn: Callable[[T], U]) -> Ok[U]:
        """Return ``Ok(fn(value))``."""
        return Ok(fn(self.value))


@dataclass(frozen=True, slots=True)
class Err(Generic[E]):
    """A failure that carries ``error``, an exception; ``case Err(error): ...``."""

    error: E

    def is_ok(self) -> bool:
        """Return ``False``."""
        return False

    def unwrap(self) -> NoReturn:
        """Raise the error."""
        raise self.error

    def map(self, fn: Callable[[Any], Any]) -> Err[E]:
        """Return this failure unchanged."""
        return self


Result: TypeAlias = Ok[T] | Err[E]
"""What a handler may return instead of a plain value: ``Ok(value)`` or ``Err(error)``."""
