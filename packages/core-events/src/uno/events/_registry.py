"""The event registry: stable type name and version to event class, and upcaster chains."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
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

    def register(self, cls: C, /, *more: type[Event], upcasters: Iterable[Upcaster] = ()) -> C:
        """Register event classes under their ``event_type`` and ``event_version``.

        Returns the first class, so this also works as a class decorator.
        Registering the same class again does nothing. To add a new version of a
        type that already has upcasters, register the class together with the
        upcaster that reaches it: ``registry.register(V4, upcasters=[v3_to_v4])``.
        Either everything given is registered, or nothing is.

        Raises:
            EventDefinitionError: a class is not an ``Event`` or declares no ``event_type``.
            DuplicateEventType: another class holds that name and version; names both.
            UpcasterChainError: a chain would have a missing, duplicated or dangling link.
        """
        self._update((cls, *more), upcasters)
        return cls

    def add_upcasters(self, *upcasters: Upcaster) -> None:
        """Register upcaster chains, checking that each is whole.

        Upcasters of several types may be given at once; together with those
        already registered, the links of each type must run without a gap from
        the oldest one up to the latest registered class. Adding an upcaster that
        is already registered does nothing.

        Raises:
            UpcasterChainError: a link is missing, duplicated, goes past the latest
                registered class, or targets a class other than the registered one.
                Nothing is registered then.
        """
        self._update((), upcasters)

    def _update(self, classes: Iterable[object], upcasters: Iterable[Upcaster]) -> None:
        """Check the registry as it would be with these additions, then make them."""
        new_classes = dict(self._classes)
        new_latest = dict(self._latest)
        new_links = {t: dict(links) for t, links in self._upcasters.items()}
        touched: set[str] = set()
        for candidate in classes:
            cls = _event_class(candidate)
            key = (cls.event_type, cls.event_version)
            existing = new_classes.get(key)
            if existing is cls:
                continue
            if existing is not None:
                raise DuplicateEventType(key[0], key[1], existing, cls)
            new_classes[key] = cls
            new_latest[key[0]] = max(new_latest.get(key[0], 0), key[1])
            touched.add(key[0])
        for link in upcasters:
            if not isinstance(link, Upcaster):
                raise EventDefinitionError(
                    f"{link!r} is not an upcaster; build one with @upcaster or @typed_upcaster"
                )
            links = new_links.setdefault(link.event_type, {})
            present = links.get(link.from_version)
            if present is link:
                continue
            if present is not None:
                raise UpcasterChainError(
                    link.event_type,
                    f"two upcasters from version {link.from_version}: {present!r} and {link!r}. "
                    "Keep one.",
                )
            links[link.from_version] = link
            touched.add(link.event_type)
        for event_type in touched:
            chain = new_links.get(event_type)
            if chain:
                self._check_chain(event_type, chain, new_classes, new_latest)
        if not touched:
            return
        self._classes = new_classes
        self._identities.clear()
        self._identities.update({cls: key for key, cls in new_classes.items()})
        self._latest = new_latest
        self._upcasters = new_links
        self._changed()

    @staticmethod
    def _check_chain(
        event_type: str,
        links: dict[int, Upcaster],
        classes: dict[tuple[str, int], type[Event]],
        latest_versions: dict[str, int],
    ) -> None:
        latest = latest_versions.get(event_type)
        if latest is None:
            raise UpcasterChainError(
                event_type, "no class of this type is registered; register the classes first."
            )
        for version in range(min(links), latest):
            if version not in links:
                raise UpcasterChainError(
                    event_type,
                    f"missing the link from version {version} to {version + 1}: "
                    f"an event stored as version {min(links)} could not reach version {latest}. "
                    "Register a new version together with the upcaster that reaches it: "
                    "registry.register(NewClass, upcasters=[...]).",
                )
        for version, link in links.items():
            if version >= latest:
                raise UpcasterChainError(
                    event_type,
                    f"{link!r} goes from version {version} to {version + 1}, past the latest "
                    f"registered class (version {latest}); register that class with it: "
                    "registry.register(NewClass, upcasters=[...]).",
                )
            target = getattr(link, "target_class", None)
            registered = classes.get((event_type, version + 1))
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


def _event_class(cls: object) -> type[Event]:
    if not (isinstance(cls, type) and issubclass(cls, Event)):
        raise EventDefinitionError(f"only Event subclasses can be registered, got {cls!r}")
    if cls.is_abstract():
        raise EventDefinitionError(
            f"{cls.__qualname__} declares no event_type of its own; add "
            "event_type = '<context>.<Name>' to the class to make it storable"
        )
    return cls
