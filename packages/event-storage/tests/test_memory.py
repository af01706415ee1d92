"""The in-memory backend passes the conformance kit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from uno.event_storage import InMemoryEventStore, open_event_store
from uno.event_storage.testing import EventStoreContract
from uno.events import EventRegistry


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, registry: EventRegistry) -> AsyncIterator[InMemoryEventStore]:
        async with open_event_store("memory://", registry=registry, max_event_size=4096) as store:
            assert isinstance(store, InMemoryEventStore)
            yield store
