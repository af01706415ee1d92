"""The conformance kit: tests that prove a backend keeps the event store contract.

A backend, ours or a third party's, subclasses ``EventStoreContract`` in its
test suite and provides one fixture, ``store``, that yields an open, empty
store built with the ``registry`` fixture::

    import pytest
    from uno.event_storage.testing import EventStoreContract

    class TestMyStore(EventStoreContract):
        @pytest.fixture
        async def store(self, registry):
            async with open_event_store("mine://...", registry=registry) as store:
                yield store

Bad arguments (a position, count or version out of range or of another
type than ``int``, a filter with a NUL, stream metadata that would not read
back) must raise ``uno.events.exceptions.InvalidArgument`` naming the
parameter, before anything is read or written (``ArgumentContract``, part of
``EventStoreContract``); other misuse (an append without events) raises
``ValueError`` or a subclass. Every test then runs against it, unchanged
(pytest with the anyio plugin; the ``[testing]`` extra installs what the kit
needs). A store that has a
``transaction()`` method (``TransactionalEventStore``) also subclasses
``TransactionalStoreContract``: writes inside transactions that commit, roll
back or are cancelled, and what readers outside see meanwhile. A store with
``lease_store()`` runs ``LeaseStoreContract`` on its leases.
"""

from uno.event_storage.testing._arguments import ArgumentContract, odd_values
from uno.event_storage.testing._concurrency import ConcurrencyReport, run_concurrent_writers
from uno.event_storage.testing._contract import EventStoreContract
from uno.event_storage.testing._fixtures import (
    AccountOpened,
    AccountSnapshot,
    MoneyDeposited,
    TransactionalStore,
    contract_registry,
    settled,
)
from uno.event_storage.testing._leases import LeaseStoreContract, NewHolder
from uno.event_storage.testing._services import postgres_url, require_service
from uno.event_storage.testing._transactional import TransactionalStoreContract

__all__ = [
    "AccountOpened",
    "AccountSnapshot",
    "ArgumentContract",
    "ConcurrencyReport",
    "EventStoreContract",
    "LeaseStoreContract",
    "MoneyDeposited",
    "NewHolder",
    "TransactionalStore",
    "TransactionalStoreContract",
    "contract_registry",
    "odd_values",
    "postgres_url",
    "require_service",
    "run_concurrent_writers",
    "settled",
]
