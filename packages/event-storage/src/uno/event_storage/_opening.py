"""Open a store by URL: the scheme names a backend registered as an entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any, Protocol

from uno.event_storage.exceptions import StoreConfigurationError, UnknownBackend
from uno.events import CheckpointStore, EventRegistry, EventStore, SnapshotStore

__all__ = [
    "BACKENDS_GROUP",
    "Backend",
    "ClosableEventStore",
    "installed_backends",
    "open_event_store",
]

BACKENDS_GROUP = "uno.event_storage.backends"


class ClosableEventStore(EventStore, SnapshotStore, CheckpointStore, Protocol):
    """What a backend's ``from_url`` returns: events, snapshots, checkpoints, and ``close``."""

    async def close(self) -> None:
        """Release the store's resources."""
        ...


class Backend(Protocol):
    """What an entry point in group ``uno.event_storage.backends`` names.

    An implementer guarantees that ``from_url`` returns an open store for a URL
    of its scheme, and raises ``StoreConfigurationError`` for a malformed one.
    """

    async def from_url(
        self, url: str, *, registry: EventRegistry, **options: Any
    ) -> ClosableEventStore:
        """Open a store for ``url``."""
        ...


def installed_backends() -> list[str]:
    """Return the URL schemes of every installed backend, sorted."""
    return sorted({ep.name for ep in entry_points(group=BACKENDS_GROUP)})


def _backend(scheme: str) -> Backend:
    found = entry_points(group=BACKENDS_GROUP, name=scheme)
    if not found:
        raise UnknownBackend(scheme, installed_backends())
    entry_point = next(iter(found))
    try:
        backend: Backend = entry_point.load()
    except ImportError as exc:
        raise UnknownBackend(
            scheme, installed_backends(), missing=f"{entry_point.value} ({exc})"
        ) from exc
    return backend


@asynccontextmanager
async def open_event_store(
    url: str, *, registry: EventRegistry, **options: Any
) -> AsyncIterator[ClosableEventStore]:
    """Open the event store at ``url`` and close it on leaving the block.

    ``memory://``, ``sqlite:///path/to/events.db`` and ``postgresql://user@host/db``
    are built in (PostgreSQL needs the ``[postgres]`` extra). Options go to the
    backend: ``serializer``, ``max_event_size``, ``auto_migrate`` and others.

    Raises:
        UnknownBackend: no installed backend handles the scheme.
        StoreConfigurationError: the URL has no scheme.
    """
    scheme, separator, _ = url.partition("://")
    if not separator or not scheme:
        raise StoreConfigurationError(
            f"{url!r} is not a store URL; use memory://, sqlite:///events.db or postgresql://..."
        )
    store = await _backend(scheme.lower()).from_url(url, registry=registry, **options)
    try:
        yield store
    finally:
        await store.close()
