"""Idempotency keys: the behaviour that runs a command once per key, and the stores of keys.

The PostgreSQL store is ``uno.cqrs.idempotency.postgres.PostgresIdempotencyStore``
(it needs the ``[postgres]`` extra).
"""

from uno.cqrs.idempotency._behaviour import REPLAYED, IdempotencyBehaviour, open_idempotency_store
from uno.cqrs.idempotency._sqlite import SQLiteIdempotencyStore
from uno.cqrs.idempotency._store import Claim, IdempotencyStore, InMemoryIdempotencyStore

__all__ = [
    "REPLAYED",
    "Claim",
    "IdempotencyBehaviour",
    "IdempotencyStore",
    "InMemoryIdempotencyStore",
    "SQLiteIdempotencyStore",
    "open_idempotency_store",
]
