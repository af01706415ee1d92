"""Service addresses, stores of every backend, and the ledger domain the projection tests share."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from uno.event_storage import ClosableEventStore, open_event_store
from uno.event_storage.testing import postgres_url
from uno.events import EventRegistry

# The tests import the shared domain modules ``ledger`` and ``bank`` from this folder.
sys.path.insert(0, str(Path(__file__).parent))

from bank import bank_registry
from ledger import StoreOpener, ledger_registry

__all__ = ["postgres_url"]  # the fixture, shared by the whole folder


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def drop_schema(url: str, schema: str) -> None:
    """Drop a test schema and everything in it."""
    import psycopg  # noqa: PLC0415 - only the PostgreSQL runs need it
    from psycopg import sql  # noqa: PLC0415

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


@pytest.fixture
async def pg_schema(postgres_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema name, dropped after the test."""
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        await drop_schema(postgres_url, schema)


def _opener(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    registry: Callable[[], EventRegistry] = ledger_registry,
) -> StoreOpener:

    options: dict[str, object] = {"poll_interval": 0.05}
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
        options["auto_migrate"] = True
    else:
        url = request.getfixturevalue("postgres_url")
        options["schema"] = request.getfixturevalue("pg_schema")
        options["auto_migrate"] = True

    @asynccontextmanager
    async def opener() -> AsyncIterator[ClosableEventStore]:
        async with open_event_store(url, registry=registry(), **options) as store:
            yield store

    return opener


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Open (as often as needed, the same) store of each backend with the ledger's events."""
    return _opener(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def open_tx_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Open a store of each backend whose transactions hold read models (SQLite, PostgreSQL)."""
    return _opener(request.param, request, tmp_path)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_bank_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Open a store of each backend with the bank's events registered."""
    return _opener(request.param, request, tmp_path, bank_registry)


@pytest.fixture
async def store(open_bank_store: StoreOpener) -> AsyncIterator[ClosableEventStore]:
    """An open, empty store of each backend with the bank's events registered."""
    async with open_bank_store() as opened:
        yield opened
