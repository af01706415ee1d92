"""Handler tables: which method of a class handles which event class, bound once per class.

Aggregates (``@applies``), projections and process managers (``@handles``)
mark methods; ``HandlerTable`` resolves each method's event class from the
decorator's arguments or from the annotation of its first parameter (an
``Event`` subclass, or ``RecordedEvent[SomeEvent]``), once per class, and
dispatches by ``type(event)`` afterwards: no name lookup per event.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, TypeVar

from uno.event_sourcing.exceptions import HandlerDefinitionError
from uno.events import Event, RecordedEvent

__all__ = ["HandlerTable", "mark_handler"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__uno_handles__"


def mark_handler(kind: str, fn_or_event: Any, more: tuple[Any, ...]) -> Callable[[F], F] | Any:
    """Implement a bare-or-called handler decorator such as ``@applies``/``@applies(E1, E2)``."""
    if isinstance(fn_or_event, type):
        events = (fn_or_event, *more)
        for cls in events:
            if not (isinstance(cls, type) and issubclass(cls, Event)):
                raise HandlerDefinitionError(f"@{kind}(...) takes Event subclasses, got {cls!r}")

        def decorate(fn: F) -> F:
            setattr(fn, _MARK, (kind, events))
            return fn

        return decorate
    if more or not callable(fn_or_event):
        raise HandlerDefinitionError(
            f"@{kind} decorates a method, or takes event classes: @{kind}(MoneyDeposited)"
        )
    setattr(fn_or_event, _MARK, (kind, None))
    return fn_or_event


def _event_class(annotation: object) -> type[Event] | None:
    if typing.get_origin(annotation) is RecordedEvent:
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    if isinstance(annotation, type) and issubclass(annotation, Event):
        return annotation
    return None


class HandlerTable:
    """The handlers of one class for one decorator kind, resolved once.

    Resolution happens when the class is created; when an annotation names a
    class that does not exist yet (a class defined later, or inside a
    function), it is retried once at the first dispatch, and a failure then
    says to name the event class in the decorator.
    """

    __slots__ = ("_by_class", "_declared", "_kind", "_owner", "_pending")

    def __init__(self, owner: type, kind: str) -> None:
        self._owner = owner
        self._kind = kind
        self._by_class: dict[type[Event], Callable[..., Any]] = {}
        self._declared: set[type[Event]] = set()
        self._pending: list[tuple[str, Callable[..., Any]]] = []
        for base in reversed(owner.__mro__):
            for name, member in vars(base).items():
                fn = getattr(member, "__func__", member)
                mark = getattr(fn, _MARK, None)
                if mark is None or mark[0] != kind:
                    continue
                if mark[1] is not None:
                    self._add(mark[1], fn, name)
                else:
                    self._pending.append((name, fn))
        self._resolve(final=False)

    def _add(self, classes: tuple[type[Event], ...], fn: Callable[..., Any], name: str) -> None:
        for cls in classes:
            other = self._by_class.get(cls)
            if other is not None and other.__name__ != name:
                raise HandlerDefinitionError(
                    f"{self._owner.__qualname__} has two @{self._kind} methods for "
                    f"{cls.__qualname__}: {other.__name__} and {name}; keep one"
                )
            self._by_class[cls] = fn
            self._declared.add(cls)

    def _resolve(self, *, final: bool) -> None:
        still: list[tuple[str, Callable[..., Any]]] = []
        for name, fn in self._pending:
            try:
                hints = typing.get_type_hints(fn)
            except NameError:
                if final:
                    raise HandlerDefinitionError(
                        f"Cannot resolve the annotations of {self._owner.__qualname__}.{name}: "
                        f"name the event class in the decorator, @{self._kind}(SomeEvent)"
                    ) from None
                still.append((name, fn))
                continue
            hints.pop("return", None)
            first = next(iter(hints.values()), None)
            cls = _event_class(first)
            if cls is None:
                raise HandlerDefinitionError(
                    f"{self._owner.__qualname__}.{name} is marked @{self._kind} but its first "
                    "parameter is not annotated with an Event subclass (or RecordedEvent[E]): "
                    f"annotate it, or write @{self._kind}(SomeEvent)"
                )
            self._add((cls,), fn, name)
        self._pending = still

    def get(self, event_class: type[Event]) -> Callable[..., Any] | None:
        """Return the function handling ``event_class`` (or a base class of it), if any."""
        fn = self._by_class.get(event_class)
        if fn is not None:
            return fn
        if self._pending:
            self._resolve(final=True)
            fn = self._by_class.get(event_class)
            if fn is not None:
                return fn
        for base in event_class.__mro__[1:]:
            fn = self._by_class.get(base)
            if fn is not None:
                self._by_class[event_class] = fn  # cache the inherited match
                return fn
        return None

    def event_classes(self) -> frozenset[type[Event]]:
        """Return the event classes named by the handlers (not their subclasses)."""
        if self._pending:
            self._resolve(final=True)
        return frozenset(self._declared)
