"""The event registry: stable type name and version to event class, and upcaster chains."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TypeVar

from uno.events._event import Event
from uno.events._upcasting import Upcaster
from uno.events.exceptions import (
    DuplicateEventType,
    EventDefinitionError,
    UnregisteredEvent,
    UpcasterChainError,
)

__all__ = ["EventRegistry"]

C = TypeVar("C", bound=type[Event])


class EventRegistry:
    """Map stable type names and versions to event classes, and hold upcaster chains.

    Register the event classes first, then the upcasters of their old versions.
    The registry checks each chain when it is registered: every version from the
    oldest upcaster to the latest registered class has exactly one link.

    Example::

        registry = EventRegistry()
        registry.register(AccountOpened, MoneyDeposited)
        registry.add_upcasters(add_currency)

    Serializers are told of every change, so classes and upcasters added later
    take effect at once.
    """

    def __init__(self) -> None:
        self._classes: dict[tuple[str, int], type[Event]] = {}
        self._identities: dict[type[Event], tuple[str, int]] = {}
        self._latest: dict[str, int] = {}
        self._upcasters: dict[str, dict[int, Upcaster]] = {}
        self._listeners: list[weakref.WeakMethod[Callable[[], None]]] = []
        self.identities: Mapping[type[Event], tuple[str, int]] = MappingProxyType(self._identities)
        """Read-only view: registered class to ``(event_type, event_version)``."""

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call the bound method ``callback`` after every change, while its object lives.

        Caches derived from the registry (such as a serializer's decode plans)
        use it to forget what a new class or upcaster makes stale.
        """
        self._listeners.append(weakref.WeakMethod(callback))

    def _changed(self) -> None:
        alive = []
        for reference in self._listeners:
            callback = reference()
            if callback is not None:
                callback()
                alive.append(reference)
        self._listeners = alive

    def register(self, cls: C, /, *more: type[Event]) -> C:
        """Register event classes under their ``event_type`` and ``event_version``.

        Returns the first class, so this also works as a class decorator.
        Registering the same class again does nothing.

        Raises:
            EventDefinitionError: a class is not an ``Event`` or declares no ``event_type``.
            DuplicateEventType: another class holds that name and version; names both.
            UpcasterChainError: a class is newer than the end of its registered chain.
        """
        classes: tuple[object, ...] = (cls, *more)
        for event_class in classes:
            self._register_one(event_class)
        return cls

    def _register_one(self, cls: object) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise EventDefinitionError(f"only Event subclasses can be registered, got {cls!r}")
        if cls.is_abstract():
            raise EventDefinitionError(
                f"{cls.__qualname__} declares no event_type of its own; add "
                "event_type = '<context>.<Name>' to the class to make it storable"
            )
        key = (cls.event_type, cls.event_version)
        existing = self._classes.get(key)
        if existing is cls:
            return
        if existing is not None:
            raise DuplicateEventType(key[0], key[1], existing, cls)
        chain = self._upcasters.get(key[0])
        latest = self._latest.get(key[0], 0)
        if chain and key[1] > latest:
            raise UpcasterChainError(
                key[0],
                f"its upcasters end at version {latest}, so version {key[1]} "
                f"({cls.__qualname__}) would be unreachable from older versions. Register "
                "every class of the type before its upcasters, with the upcaster from "
                f"version {latest} among them.",
            )
        self._classes[key] = cls
        self._identities[cls] = key
        self._latest[key[0]] = max(latest, key[1])
        self._changed()

    def add_upcasters(self, *upcasters: Upcaster) -> None:
        """Register upcaster chains, checking that each is whole.

        Upcasters of several types may be given at once; together with those
        already registered, the links of each type must run without a gap from
        the oldest one up to the latest registered class.

        Raises:
            UpcasterChainError: a link is missing, duplicated, goes past the latest
                registered class, or targets a class other than the registered one.
                Nothing is registered then.
        """
        by_type: dict[str, dict[int, Upcaster]] = {}
        for link in upcasters:
            if not isinstance(link, Upcaster):
                raise EventDefinitionError(
                    f"{link!r} is not an upcaster; build one with @upcaster or @typed_upcaster"
                )
            links = by_type.setdefault(
                link.event_type, dict(self._upcasters.get(link.event_type, {}))
            )
            if link.from_version in links:
                raise UpcasterChainError(
                    link.event_type,
                    f"two upcasters from version {link.from_version}: "
                    f"{links[link.from_version]!r} and {link!r}. Keep one.",
                )
            links[link.from_version] = link
        for event_type, links in by_type.items():
            self._check_chain(event_type, links)
        for event_type, links in by_type.items():
            self._upcasters[event_type] = links
        self._changed()

    def _check_chain(self, event_type: str, links: dict[int, Upcaster]) -> None:
        latest = self._latest.get(event_type)
        if latest is None:
            raise UpcasterChainError(
                event_type, "no class of this type is registered; register the classes first."
            )
        for version in range(min(links), latest):
            if version not in links:
                raise UpcasterChainError(
                    event_type,
                    f"missing the link from version {version} to {version + 1}: "
                    f"an event stored as version {min(links)} could not reach version {latest}.",
                )
        for version, link in links.items():
            if version >= latest:
                raise UpcasterChainError(
                    event_type,
                    f"{link!r} goes from version {version} to {version + 1}, past the latest "
                    f"registered class (version {latest}); register that class first.",
                )
            target = getattr(link, "target_class", None)
            registered = self._classes.get((event_type, version + 1))
            if target is not None and registered is not None and target is not registered:
                raise UpcasterChainError(
                    event_type,
                    f"{link!r} produces {target.__qualname__}, but version {version + 1} is "
                    f"registered as {registered.__qualname__}.",
                )

    def identity(self, cls: type[Event]) -> tuple[str, int]:
        """Return the registered ``(event_type, event_version)`` of ``cls``.

        Raises:
            UnregisteredEvent: ``cls`` was never registered.
        """
        try:
            return self._identities[cls]
        except KeyError:
            raise UnregisteredEvent(cls) from None

    def get(self, event_type: str, version: int) -> type[Event] | None:
        """Return the class registered for that name and version, if any."""
        return self._classes.get((event_type, version))

    def latest(self, event_type: str) -> type[Event] | None:
        """Return the newest registered class of ``event_type``, if any."""
        version = self._latest.get(event_type)
        return None if version is None else self._classes[(event_type, version)]

    def versions(self, event_type: str) -> tuple[int, ...]:
        """Return the registered versions of ``event_type``, oldest first."""
        return tuple(sorted(v for (name, v) in self._classes if name == event_type))

    def chain(self, event_type: str, from_version: int) -> tuple[Upcaster, ...] | None:
        """Return the upcasters from ``from_version`` to the latest class, in order.

        Returns an empty tuple when ``from_version`` is the latest, and ``None``
        when no registered chain starts at or before ``from_version``.
        """
        latest = self._latest.get(event_type)
        if latest is None or from_version > latest:
            return None
        links = self._upcasters.get(event_type, {})
        if from_version < latest and from_version not in links:
            return None
        return tuple(links[v] for v in range(from_version, latest))

    def __contains__(self, cls: object) -> bool:
        return cls in self._identities

    def __iter__(self) -> Iterator[type[Event]]:
        return iter(self._classes.values())

    def __len__(self) -> int:
        return len(self._classes)
