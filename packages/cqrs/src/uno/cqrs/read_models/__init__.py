"""Read models: document repositories queried by specifications.

Documents (pydantic models or msgspec structs with an id) live in memory,
SQLite (JSON1) or PostgreSQL (JSONB), chosen by URL::

    async with open_repository("sqlite:///read.db", Account, auto_migrate=True) as accounts:
        await accounts.upsert(Account(id="a-1", owner="ann", balance=10))
        rich = await accounts.query().filter(accounts.where.gt("balance", 5)).all()

Specifications behave the same on every backend (see ``Where`` for the
semantics); pages use signed keyset cursors.
"""

from uno.cqrs.exceptions import (
    DocumentNotFound,
    DuplicateDocument,
    InvalidCursor,
    InvalidDocument,
    InvalidQuery,
    InvalidSpecification,
    PageSizeTooLarge,
    ReadModelConfigurationError,
    ReadModelError,
    ReadModelNotMigrated,
    ReadModelUnavailable,
    StaleDocumentVersion,
    UnknownReadModelBackend,
)
from uno.cqrs.read_models._documents import Index, ReadModelOptions
from uno.cqrs.read_models._query import Page, Query
from uno.cqrs.read_models._repository import (
    BACKENDS_GROUP,
    ReadModelBackend,
    RepositoryBase,
    Versioned,
    installed_read_model_backends,
    open_repository,
)
from uno.cqrs.read_models._specifications import Specification, Where, and_, not_, or_
from uno.cqrs.read_models._transactions import PostgresTransactionScope, SQLiteTransactionScope
from uno.cqrs.read_models.memory import InMemoryRepository

__all__ = [
    "BACKENDS_GROUP",
    "DocumentNotFound",
    "DuplicateDocument",
    "InMemoryRepository",
    "Index",
    "InvalidCursor",
    "InvalidDocument",
    "InvalidQuery",
    "InvalidSpecification",
    "Page",
    "PageSizeTooLarge",
    "PostgresTransactionScope",
    "Query",
    "ReadModelBackend",
    "ReadModelConfigurationError",
    "ReadModelError",
    "ReadModelNotMigrated",
    "ReadModelOptions",
    "ReadModelUnavailable",
    "RepositoryBase",
    "SQLiteTransactionScope",
    "Specification",
    "StaleDocumentVersion",
    "UnknownReadModelBackend",
    "Versioned",
    "Where",
    "and_",
    "installed_read_model_backends",
    "not_",
    "open_repository",
    "or_",
]
