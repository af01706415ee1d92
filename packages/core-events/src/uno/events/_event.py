"""The base class of domain events."""

from __future__ import annotations

import re
from typing import Any, ClassVar, dataclass_transform

import msgspec

from uno.events.exceptions import EventDefinitionError

__all__ = ["Event", "validate_event_type", "validate_event_version"]

MAX_EVENT_TYPE_LENGTH = 200
_EVENT_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.:\-/][A-Za-z0-9_]+)*")


def validate_event_type(event_type: object) -> str:
    """Return ``event_type`` if it is a valid stable type name, else raise.

    A type name is 1-200 ASCII characters: words of letters, digits and ``_``
    joined by ``.``, ``:``, ``-`` or ``/`` (``"bank.MoneyDeposited"``).

    Raises:
        EventDefinitionError: the name is not a string or does not match.
    """
    if not isinstance(event_type, str):
        raise EventDefinitionError(
            f"event_type must be a str such as 'bank.MoneyDeposited', got {event_type!r}"
        )
    if len(event_type) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(event_type):
        shown = event_type if len(event_type) <= 60 else event_type[:60] + "..."
        raise EventDefinitionError(
            f"event_type {shown!r} is not a valid type name: use 1-{MAX_EVENT_TYPE_LENGTH} "
            "ASCII letters, digits and '_', in words joined by '.', ':', '-' or '/' "
            "(for example 'bank.MoneyDeposited')"
        )
    return event_type


def validate_event_version(version: object, *, what: str) -> int:
    """Return ``version`` if it is an int >= 1, else raise ``EventDefinitionError``."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise EventDefinitionError(f"{what} must be an int >= 1, got {version!r}")
    return version


class _EventMeta(msgspec.StructMeta):
    """Make every event class keyword-only, not only the fields ``Event`` declares."""

    def __new__(
        mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> _EventMeta:
        kwargs.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, namespace, **kwargs)


# Tell type checkers what _EventMeta does at run time: event classes are frozen and keyword-only.
@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(msgspec.field,))
class Event(msgspec.Struct, frozen=True, kw_only=True, metaclass=_EventMeta):
    """A domain event: an immutable fact, named and versioned for storage.

    Subclass it, declare the stable ``event_type`` name that is written to the
    store, and raise ``event_version`` when the shape changes (register an
    upcaster from the old version)::

        class MoneyDeposited(Event):
            event_type = "bank.MoneyDeposited"
            event_version = 2

            account_id: UUID
            amount: Decimal
            currency: str

    ``event_version`` defaults to 1 and is not inherited: a subclass of a
    concrete event is a new type with its own name and version. A class without
    its own ``event_type`` is abstract: it can be subclassed, not registered.
    """

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "event_version" not in own:
            cls.event_version = 1
        validate_event_version(
            cls.__dict__["event_version"], what=f"{cls.__qualname__}.event_version"
        )
        if "event_type" in own:
            validate_event_type(own["event_type"])

    @classmethod
    def is_abstract(cls) -> bool:
        """Return whether this class declares no ``event_type`` of its own."""
        return "event_type" not in cls.__dict__
