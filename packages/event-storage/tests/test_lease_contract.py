"""The lease contract of the conformance kit, run on the memory and PostgreSQL lease stores.

SQLite runs it in ``test_sqlite_leases.py``, beside its own lease tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import psycopg
import pytest

from uno.event_storage import InMemoryLeaseStore
from uno.event_storage.postgres import PostgresLease, PostgresLeaseStore
from uno.event_storage.testing import LeaseStoreContract, NewHolder
from uno.events import Lease


class TestInMemoryLeases(LeaseStoreContract):
    @pytest.fixture
    def leases(self) -> InMemoryLeaseStore:
        return InMemoryLeaseStore()

    @pytest.fixture
    def new_holder(self, leases: InMemoryLeaseStore) -> NewHolder:
        return lambda: leases  # one store: its tasks are its holders

    @pytest.fixture
    def lose(self, leases: InMemoryLeaseStore) -> Callable[[Lease], Awaitable[None]]:
        async def lose(lease: Lease) -> None:
            leases.revoke(lease.name)

        return lose


class TestPostgresLeases(LeaseStoreContract):
    @pytest.fixture
    def new_holder(self, postgres_url: str) -> NewHolder:
        namespace = f"uno-test-{uuid.uuid4().hex}"  # apart from every other test's leases
        return lambda: PostgresLeaseStore(postgres_url, namespace=namespace)

    @pytest.fixture
    def lose(self, postgres_url: str) -> Callable[[Lease], Awaitable[None]]:
        async def lose(lease: Lease) -> None:
            assert isinstance(lease, PostgresLease)
            async with await psycopg.AsyncConnection.connect(
                postgres_url, autocommit=True
            ) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", [lease.backend_pid])

        return lose
