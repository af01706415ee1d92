"""Projections: read models built from the global log, each with its own checkpoint.

A ``Projection`` is delivered events at least once: its read model lives
anywhere (a dict, Redis, another database), and after a crash the events
since its last saved checkpoint come again. A ``TransactionalProjection``
writes its read model through the store's transaction, the same one that
saves its checkpoint, so each event's effect commits exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, overload

from uno.event_sourcing._handlers import HandlerTable, mark_handler
from uno.event_sourcing.exceptions import ProjectionConfigurationError
from uno.events import Event, RecordedEvent, StoreTransaction

__all__ = ["Projection", "ProjectionBase", "TransactionalProjection", "handles"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def handles(fn_or_event: type[Event], /, *more: type[Event]) -> Callable[[F], F]: ...
@overload
def handles(fn_or_event: F, /) -> F: ...
def handles(fn_or_event: Any, /, *more: type[Event]) -> Any:
    """Mark a method as the handler of an event class.

    Bare, the class comes from the annotation of the method's first parameter
    (``RecordedEvent[MoneyDeposited]`` or ``MoneyDeposited``); called, it names
    one or more classes: ``@handles(MoneyDeposited, MoneyWithdrawn)``. A handler
    of a base class also receives the subclasses that exist when the runner
    starts.
    """
    return mark_handler("handles", fn_or_event, more)


def type_names(classes: frozenset[type[Event]]) -> frozenset[str]:
    names: set[str] = set()
    todo = list(classes)
    while todo:
        cls = todo.pop()
        own = cls.__dict__.get("event_type")
        if isinstance(own, str):
            names.add(own)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


class ProjectionBase:
    """What both kinds of projection share: a name, handlers, partitions.

    Attributes:
        name: The projection's stable name; it names its checkpoint, so
            renaming a projection rebuilds it from the start.
        partitions: Split the projection into this many partitions by a hash
            of the stream id; each runs under its own lease and checkpoint.
    """

    name: ClassVar[str]
    partitions: ClassVar[int] = 1
    _handlers: ClassVar[HandlerTable]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = HandlerTable(cls, "handles")
        partitions: object = cls.partitions
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ProjectionConfigurationError(
                f"{cls.__qualname__}.partitions must be an int >= 1, got {partitions!r}"
            )

    @classmethod
    def projection_name(cls) -> str:
        """Return ``name``, or raise ``ProjectionConfigurationError`` when it is missing."""
        name: object = cls.__dict__.get("name", getattr(cls, "name", None))
        if not isinstance(name, str) or not name:
            raise ProjectionConfigurationError(
                f"{cls.__qualname__} has no name: set the class attribute "
                "name = 'some-read-model' (it names the checkpoint)"
            )
        return name

    @classmethod
    def event_types(cls) -> frozenset[str]:
        """Return the ``event_type`` names the handlers take (subclasses included)."""
        return type_names(cls._handlers.event_classes())

    def handles_event(self, event: RecordedEvent[Event]) -> bool:
        """Return whether a handler takes ``event``."""
        return self._handlers.get(type(event.data)) is not None


class Projection(ProjectionBase):
    """A read model updated at least once per event, kept anywhere.

    Subclass it, set ``name``, and write one ``async`` method per event class,
    marked ``@handles``::

        class Balances(Projection):
            name = "balances"

            @handles
            async def on_deposit(self, event: RecordedEvent[MoneyDeposited]) -> None:
                ...

    After a crash the events since the last saved checkpoint are delivered
    again: make the handlers idempotent (upserts keyed by the event, or a
    stored ``global_position`` to compare with). Override ``reset`` to allow a
    rebuild.
    """

    async def apply(self, event: RecordedEvent[Event]) -> bool:
        """Run the handler of ``event``; return ``False`` if no handler takes it."""
        fn = self._handlers.get(type(event.data))
        if fn is None:
            return False
        await fn(self, event)
        return True

    async def reset(self) -> None:
        """Clear the read model before a rebuild replays every event."""
        raise ProjectionConfigurationError(
            f"{type(self).__qualname__} cannot be rebuilt: override "
            "async def reset(self) -> None to clear its read model"
        )


class TransactionalProjection(ProjectionBase):
    """A read model written in the store's transaction, with its checkpoint: exactly once.

    Handlers take the ``StoreTransaction`` as second argument and write
    through it (``tx.connection`` on PostgreSQL, ``await tx.run(fn)`` on
    SQLite)::

        class Balances(TransactionalProjection):
            name = "balances"

            @handles
            async def on_deposit(self, event: RecordedEvent[MoneyDeposited], tx) -> None:
                await tx.run(lambda c: c.execute("UPDATE ...", (...)))

    The runner saves the checkpoint in the same transaction, so an event's
    effect and the checkpoint past it commit together or not at all. The read
    model must live in the event store's database. A unit of work can call
    ``apply`` too, to update the read model in the transaction of an append.
    """

    async def apply(self, event: RecordedEvent[Event], tx: StoreTransaction) -> bool:
        """Run the handler of ``event`` inside ``tx``; return ``False`` if none takes it."""
        fn = self._handlers.get(type(event.data))
        if fn is None:
            return False
        await fn(self, event, tx)
        return True

    async def reset(self, tx: StoreTransaction) -> None:
        """Clear the read model, inside ``tx``, before a rebuild replays every event."""
        raise ProjectionConfigurationError(
            f"{type(self).__qualname__} cannot be rebuilt: override "
            "async def reset(self, tx) -> None to clear its read model"
        )
