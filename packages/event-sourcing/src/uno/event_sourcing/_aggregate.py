"""Aggregates: consistency boundaries whose state changes only by applying their events."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from uno.event_sourcing._handlers import HandlerTable, mark_handler
from uno.event_sourcing.exceptions import HandlerDefinitionError, UnhandledEvent
from uno.events import Event, EventMetadata, NewEvent

if TYPE_CHECKING:
    from uno.event_sourcing._snapshots import SnapshotPolicy

__all__ = ["Aggregate", "applies"]

F = TypeVar("F", bound=Callable[..., Any])

_CATEGORY = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}")


@overload
def applies(event: type[Event], /, *more: type[Event]) -> Callable[[F], F]: ...
@overload
def applies(fn: F, /) -> F: ...
def applies(fn_or_event: Any, /, *more: type[Event]) -> Any:
    """Mark an aggregate method as the one that applies an event to its state.

    Bare, it applies the event class its first parameter is annotated with;
    ``@applies(Opened, Reopened)`` names the classes instead. The method is
    found once, when the class is created, and must only change state: it runs
    again every time the aggregate is loaded.
    """
    return mark_handler("applies", fn_or_event, more)


class Aggregate:
    """A consistency boundary rebuilt from its events.

    Subclass it. ``__init__(self, aggregate_id)`` sets the empty state (call
    ``super().__init__(aggregate_id)``); command methods check the invariants
    and call ``record`` with new events; methods marked ``@applies`` change the
    state, and nothing else does::

        class Account(Aggregate):
            category = "account"

            def __init__(self, aggregate_id: str) -> None:
                super().__init__(aggregate_id)
                self.balance = 0

            def deposit(self, amount: int) -> None:
                if amount <= 0:
                    raise InvariantViolation("deposit a positive amount")
                self.record(Deposited(amount=amount))

            @applies
            def _deposited(self, event: Deposited) -> None:
                self.balance += event.amount

    Class attributes:
        category: The stream category; the stream of aggregate ``x`` is
            ``"<category>-x"``. Defaults to the class name in lower case.
        snapshot_policy: When repositories save a snapshot (``None``: never).
        snapshot_type: The type ``to_snapshot`` returns (any msgspec-encodable
            type); set it, with ``to_snapshot`` and ``from_snapshot``, to use snapshots.
        snapshot_version: Raise it when the snapshot's shape or meaning
            changes: older snapshots are then ignored, and the aggregate is
            rebuilt from its events.
    """

    category: ClassVar[str]
    snapshot_policy: ClassVar[SnapshotPolicy | None] = None
    snapshot_type: ClassVar[type[Any] | None] = None
    snapshot_version: ClassVar[int] = 1
    _appliers: ClassVar[HandlerTable]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "category" not in cls.__dict__:
            cls.category = cls.__name__.lower()
        category: object = cls.category
        if not isinstance(category, str) or not _CATEGORY.fullmatch(category):
            raise HandlerDefinitionError(
                f"{cls.__qualname__}.category must be 1-100 letters, digits, '_' or '.', "
                f"starting with a letter; got {cls.category!r}"
            )
        version: object = cls.snapshot_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise HandlerDefinitionError(
                f"{cls.__qualname__}.snapshot_version must be an int >= 1, got {version!r}"
            )
        cls._appliers = HandlerTable(cls, "applies")

    def __init__(self, aggregate_id: str) -> None:
        given: object = aggregate_id
        if not isinstance(given, str) or not given:
            raise ValueError(f"an aggregate id is a non-empty str, got {aggregate_id!r}")
        self._id = aggregate_id
        self._version = 0
        self._loaded_version = 0
        self._pending: list[NewEvent] = []

    @property
    def id(self) -> str:
        """The aggregate's id, unique within its class."""
        return self._id

    @property
    def version(self) -> int:
        """The version of the last event applied, recorded ones included (0 when new)."""
        return self._version

    @property
    def loaded_version(self) -> int:
        """The stream's version when the aggregate was loaded or last saved (0 when new)."""
        return self._loaded_version

    @property
    def stream_id(self) -> str:
        """The aggregate's stream: ``"<category>-<id>"``."""
        return f"{self.category}-{self._id}"

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        """Return the stream id of this class's aggregate ``aggregate_id``."""
        return f"{cls.category}-{aggregate_id}"

    @property
    def pending_events(self) -> tuple[NewEvent, ...]:
        """The events recorded since the last load or save, oldest first."""
        return tuple(self._pending)

    def record(self, event: Event, *, metadata: EventMetadata | None = None) -> None:
        """Apply a new event to the state and keep it until the aggregate is saved.

        Raises:
            UnhandledEvent: no ``@applies`` method takes the event's class
                (nothing is recorded).
        """
        self._apply(event)
        self._pending.append(
            NewEvent(data=event) if metadata is None else NewEvent(data=event, metadata=metadata)
        )

    def _apply(self, event: Event) -> None:
        fn = self._appliers.get(type(event))
        if fn is None:
            raise UnhandledEvent(type(self).__qualname__, type(event).event_type)
        fn(self, event)
        self._version += 1

    def replay(self, events: Iterable[Event], *, version: int | None = None) -> None:
        """Apply stored events (not recorded as pending); for repositories and tests.

        ``version`` is the stream version of the last event, when known.
        """
        appliers = self._appliers
        by_class = appliers.get
        count = 0
        for event in events:
            fn = by_class(type(event))
            if fn is None:
                raise UnhandledEvent(type(self).__qualname__, type(event).event_type)
            fn(self, event)
            count += 1
        self._version = version if version is not None else self._version + count
        self._loaded_version = self._version

    def mark_saved(self, version: int) -> None:
        """Forget the pending events once they are stored; ``version`` is the stream's version."""
        self._pending.clear()
        self._version = self._loaded_version = version

    def to_snapshot(self) -> Any:
        """Return the state to snapshot, of type ``snapshot_type``; override to use snapshots."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define to_snapshot()")

    @classmethod
    def from_snapshot(cls, aggregate_id: str, state: Any) -> Aggregate:
        """Return an aggregate rebuilt from ``to_snapshot``'s state; override to use snapshots."""
        raise NotImplementedError(f"{cls.__qualname__} does not define from_snapshot()")

    @classmethod
    def supports_snapshots(cls) -> bool:
        """Return whether the class defines a snapshot type and both snapshot methods."""
        return (
            cls.snapshot_type is not None
            and cls.to_snapshot is not Aggregate.to_snapshot
            and cls.from_snapshot.__func__ is not Aggregate.from_snapshot.__func__  # type: ignore[attr-defined]
        )

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self._id!r} v{self._version}>"
