"""Upcasters: turn an event stored in an old schema version into the next one."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, get_type_hints, runtime_checkable

from uno.events._event import Event, validate_event_type, validate_event_version
from uno.events.exceptions import EventDefinitionError

__all__ = ["RawUpcaster", "TypedUpcaster", "Upcaster", "typed_upcaster", "upcaster"]

RawData = dict[str, Any]
S = TypeVar("S", bound=Event)
T = TypeVar("T", bound=Event)


@runtime_checkable
class Upcaster(Protocol):
    """One link of an upcaster chain: version ``from_version`` to ``from_version + 1``.

    An implementer guarantees that ``upcast`` is a pure function of its input
    (it runs on every read of an old event and must give the same answer each
    time), never mutates its input, and returns:

    - for a raw upcaster (``source_class`` is ``None``): a new mapping in the
      shape of version ``from_version + 1``;
    - for a typed upcaster: an instance of the class of version
      ``from_version + 1``, given an instance of ``source_class``.
    """

    @property
    def event_type(self) -> str:
        """The stable type name whose versions this upcaster links."""
        ...

    @property
    def from_version(self) -> int:
        """The version this upcaster reads; it produces ``from_version + 1``."""
        ...

    @property
    def source_class(self) -> type[Event] | None:
        """The class ``upcast`` takes, or ``None`` when it takes the raw mapping."""
        ...

    def upcast(self, value: Any, /) -> Any:
        """Return the event one version newer than ``value``."""
        ...


class RawUpcaster:
    """An upcaster that maps the decoded mapping of one version to the next.

    The mapping holds what the codec decodes without a schema: JSON gives
    strings for datetimes, UUIDs and decimals; MessagePack gives datetimes.
    """

    __slots__ = ("event_type", "from_version", "function")

    source_class: None = None

    def __init__(
        self, event_type: str, from_version: int, function: Callable[[RawData], RawData]
    ) -> None:
        self.event_type = validate_event_type(event_type)
        self.from_version = validate_event_version(from_version, what="from_version")
        self.function = function

    def upcast(self, value: RawData, /) -> RawData:
        """Return the mapping of the next version."""
        return self.function(value)

    __call__ = upcast

    def __repr__(self) -> str:
        return (
            f"RawUpcaster({self.event_type!r}, {self.from_version}, {self.function.__qualname__})"
        )


class TypedUpcaster:
    """An upcaster from an instance of one event class to an instance of the next."""

    __slots__ = ("function", "source_class", "target_class")

    def __init__(
        self, source_class: type[Event], target_class: type[Event], function: Callable[[Any], Any]
    ) -> None:
        for cls in (source_class, target_class):
            if cls.is_abstract():
                raise EventDefinitionError(
                    f"{cls.__qualname__} declares no event_type; typed upcasters link "
                    "concrete event classes"
                )
        if source_class.event_type != target_class.event_type:
            raise EventDefinitionError(
                f"a typed upcaster links two versions of one type, but {source_class.__qualname__}"
                f" is {source_class.event_type!r} and {target_class.__qualname__} is "
                f"{target_class.event_type!r}"
            )
        if target_class.event_version != source_class.event_version + 1:
            raise EventDefinitionError(
                f"a typed upcaster goes up one version: {source_class.__qualname__} is version "
                f"{source_class.event_version}, so the target must be version "
                f"{source_class.event_version + 1}, not {target_class.event_version}"
            )
        self.source_class = source_class
        self.target_class = target_class
        self.function = function

    @property
    def event_type(self) -> str:
        """The stable type name of both classes."""
        return self.source_class.event_type

    @property
    def from_version(self) -> int:
        """The version of the source class."""
        return self.source_class.event_version

    def upcast(self, value: Event, /) -> Event:
        """Return the instance of the next version."""
        result = self.function(value)
        if not isinstance(result, self.target_class):
            raise TypeError(
                f"{self.function.__qualname__} returned {type(result).__qualname__}, "
                f"not {self.target_class.__qualname__}"
            )
        return result

    __call__ = upcast

    def __repr__(self) -> str:
        return (
            f"TypedUpcaster({self.source_class.__qualname__} -> "
            f"{self.target_class.__qualname__}, {self.function.__qualname__})"
        )


def upcaster(
    event_type: str, *, from_version: int
) -> Callable[[Callable[[RawData], RawData]], RawUpcaster]:
    """Decorate a function of the raw mapping as the upcaster of one version.

    Example::

        @upcaster("bank.MoneyDeposited", from_version=1)
        def add_currency(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "currency": "EUR"}
    """

    def decorate(function: Callable[[RawData], RawData]) -> RawUpcaster:
        return RawUpcaster(event_type, from_version, function)

    return decorate


def typed_upcaster(function: Callable[[S], T]) -> TypedUpcaster:
    """Decorate a function from one event class to the next as an upcaster.

    The classes are read from the function's annotations once, here::

        @typed_upcaster
        def split_name(old: CustomerRegisteredV1) -> CustomerRegistered:
            first, _, last = old.name.partition(" ")
            return CustomerRegistered(first_name=first, last_name=last)
    """
    # Also look in the caller's namespace, so classes defined in a function resolve too.
    caller = sys._getframe(1).f_locals
    hints = get_type_hints(function, localns=dict(caller))
    returned = hints.pop("return", None)
    parameters = list(hints.values())
    if len(parameters) != 1 or not _is_event_class(parameters[0]) or not _is_event_class(returned):
        raise EventDefinitionError(
            f"{function.__qualname__} must take one annotated event parameter and annotate "
            "its return type with the next version's event class"
        )
    return TypedUpcaster(parameters[0], returned, function)


def _is_event_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Event)
