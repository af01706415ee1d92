"""The in-memory event store (``memory://``): for tests and examples.

Nothing survives the process.
"""

from uno.event_storage.memory._leases import InMemoryLeaseStore
from uno.event_storage.memory._store import InMemoryEventStore, InMemoryTransaction

__all__ = ["InMemoryEventStore", "InMemoryLeaseStore", "InMemoryTransaction"]
