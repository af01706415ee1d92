"""The repository contract, what every backend shares, and opening one by URL."""

from __future__ import annotations

import abc
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from uno.cqrs._changes import ReadModelChanges
from uno.cqrs.exceptions import (
    InvalidDocument,
    InvalidQuery,
    PageSizeTooLarge,
    ReadModelConfigurationError,
    UnknownReadModelBackend,
)
from uno.cqrs.read_models._cursors import CursorCodec
from uno.cqrs.read_models._documents import DocumentType, Index
from uno.cqrs.read_models._query import Query, QueryPlan, Row
from uno.cqrs.read_models._specifications import Specification, Where

__all__ = [
    "BACKENDS_GROUP",
    "ReadModelBackend",
    "RepositoryBase",
    "Versioned",
    "installed_read_model_backends",
    "open_repository",
]

D = TypeVar("D")
BACKENDS_GROUP = "uno.cqrs.read_models"
DEFAULT_MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Versioned(Generic[D]):
    """A document and its version (1 when added, one more after each write)."""

    document: D
    version: int


class RepositoryBase(abc.ABC, Generic[D]):
    """A repository of one document type: CRUD with versions, and queries by specification.

    Every write is atomic: it stores all of its documents or none. After a
    write commits, ``changes.changed(name)`` tells listeners (a query cache).

    Args:
        model: The document class (pydantic model or msgspec struct).
        name: The read model's name (its table); by default from the class.
        indexes: Indexes to create, instead of those declared on the class.
        changes: Told the read model's name after each committed write.
        max_page_size: Most documents ``limit`` and ``page`` may ask for.
        cursor_secret: Key that signs page cursors; give every process of a
            service the same one so a cursor made by one works on another
            (by default a random key per repository).
    """

    backend: ClassVar[str]

    def __init__(
        self,
        model: type[D],
        *,
        name: str | None = None,
        indexes: Iterable[Index] | None = None,
        changes: ReadModelChanges | None = None,
        max_page_size: int = DEFAULT_MAX_PAGE_SIZE,
        cursor_secret: bytes | None = None,
    ) -> None:
        if type(max_page_size) is not int or max_page_size < 1:
            raise ReadModelConfigurationError(
                f"max_page_size must be an int >= 1, got {max_page_size!r}"
            )
        secret: object = cursor_secret
        if secret is not None and (not isinstance(secret, bytes) or len(secret) < 16):
            raise ReadModelConfigurationError("cursor_secret must be at least 16 bytes")
        self.document = DocumentType(
            model, name=name, indexes=None if indexes is None else tuple(indexes)
        )
        self.name = self.document.name
        self.where: Where[D] = Where(self.document)
        self.max_page_size = max_page_size
        self.cursors = CursorCodec(cursor_secret or secrets.token_bytes(32))
        self._changes = changes

    # -- reading -------------------------------------------------------------------

    async def get(self, document_id: object) -> D | None:
        """Return the document with this id, or None."""
        found = await self.get_versioned(document_id)
        return None if found is None else found.document

    async def get_versioned(self, document_id: object) -> Versioned[D] | None:
        """Return the document with this id and its version, or None."""
        key = self.document.key(document_id)
        rows = await self._load([key])
        if key not in rows:
            return None
        version, data = rows[key]
        return Versioned(self.document.decode(data), version)

    async def get_many(self, document_ids: Iterable[object]) -> list[D]:
        """Return the stored documents among these ids, in the order of the ids."""
        keys = list(dict.fromkeys(self.document.key(i) for i in document_ids))
        rows = await self._load(keys) if keys else {}
        return [self.document.decode(rows[k][1]) for k in keys if k in rows]

    def query(self) -> Query[D]:
        """Start a query over every document: add ``filter``, ``order_by``, ``limit``..."""

        def convert(row: Row) -> D:
            assert row[2] is not None
            return self.document.decode(row[2])

        return Query(self, QueryPlan(), convert)

    async def find(self, spec: Specification) -> list[D]:
        """Return every document that satisfies ``spec``, in id order."""
        return await self.query().filter(spec).all()

    # -- writing -------------------------------------------------------------------

    async def add(self, document: D) -> int:
        """Store a new document; return its version (1).

        Raises:
            DuplicateDocument: a document with its id is stored already.
        """
        data = self.document.encode(document)
        version = await self._insert(self.document.id_of(document), data)
        self._changed()
        return version

    async def upsert(self, document: D) -> int:
        """Store the document, replacing any with its id; return its new version."""
        data = self.document.encode(document)
        version = await self._upsert(self.document.id_of(document), data)
        self._changed()
        return version

    async def update(self, document: D, *, expected_version: int) -> int:
        """Replace the stored document if it is at ``expected_version``; return the new version.

        Raises:
            StaleDocumentVersion: it is at another version (``actual`` says which).
            DocumentNotFound: no document has its id.
        """
        _check_version(expected_version)
        data = self.document.encode(document)
        version = await self._update(self.document.id_of(document), data, expected_version)
        self._changed()
        return version

    async def delete(self, document_id: object, *, expected_version: int | None = None) -> bool:
        """Delete the document; return whether one was deleted.

        With ``expected_version`` the delete happens only at that version.

        Raises:
            StaleDocumentVersion: ``expected_version`` is given and differs.
            DocumentNotFound: ``expected_version`` is given and no document has the id.
        """
        if expected_version is not None:
            _check_version(expected_version)
        deleted = await self._delete(self.document.key(document_id), expected_version)
        if deleted:
            self._changed()
        return deleted

    async def upsert_many(self, documents: Iterable[D]) -> int:
        """Store every document (replacing those with their ids) in one transaction; count them.

        Raises:
            InvalidDocument: a document cannot be stored, or two share an id;
                nothing was written.
        """
        encode, id_of = self.document.encode, self.document.id_of
        rows: dict[str | int, bytes] = {}
        for document in documents:
            key = id_of(document)
            if key in rows:
                raise InvalidDocument(
                    f"upsert_many got two documents with id {key!r}; nothing was written: "
                    "pass each document once"
                )
            rows[key] = encode(document)
        if rows:
            await self._upsert_many(list(rows.items()))
            self._changed()
        return len(rows)

    async def clear(self) -> None:
        """Delete every document (a projection's ``reset`` before a rebuild)."""
        await self._clear()
        self._changed()

    # -- life cycle ------------------------------------------------------------------

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Create or upgrade the read model's table and indexes."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the repository's connections."""

    async def check_schema(self) -> None:
        """Raise ``ReadModelNotMigrated`` unless the table is at this uno's version.

        A backend without a schema (memory) has nothing to check.
        """

    async def _made_ready(self, *, auto_migrate: bool) -> Self:
        """Migrate (``auto_migrate``) or check the schema; close the repository if that fails."""
        try:
            if auto_migrate:
                await self.migrate()
            else:
                await self.check_schema()
        except BaseException:
            await self.close()
            raise
        return self

    def check_page_size(self, size: object) -> int:
        """Return ``size`` if it is a valid page size; raise ``InvalidQuery`` otherwise."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidQuery(f"a page size or limit must be an int >= 1, got {size!r}")
        if size > self.max_page_size:
            raise PageSizeTooLarge(size, self.max_page_size)
        return size

    def _changed(self) -> None:
        if self._changes is not None:
            self._changes.changed(self.name)

    # -- what a backend implements -------------------------------------------------

    @abc.abstractmethod
    async def _load(self, keys: list[Any]) -> dict[Any, tuple[int, bytes | str]]:
        """Return ``{id: (version, JSON)}`` of the stored documents among ``keys``."""

    @abc.abstractmethod
    async def _insert(self, key: Any, data: bytes) -> int:
        """Insert a new document; raise ``DuplicateDocument``."""

    @abc.abstractmethod
    async def _upsert(self, key: Any, data: bytes) -> int:
        """Insert or replace a document; return its version."""

    @abc.abstractmethod
    async def _update(self, key: Any, data: bytes, expected: int) -> int:
        """Replace a document at ``expected``, or raise StaleDocumentVersion or DocumentNotFound."""

    @abc.abstractmethod
    async def _delete(self, key: Any, expected: int | None) -> bool:
        """Delete a document (at ``expected`` if given)."""

    @abc.abstractmethod
    async def _upsert_many(self, rows: list[tuple[Any, bytes]]) -> None:
        """Insert or replace every row in one transaction."""

    @abc.abstractmethod
    async def _clear(self) -> None:
        """Delete every document."""

    @abc.abstractmethod
    async def _fetch(self, plan: QueryPlan) -> list[Row]:
        """Run a query plan."""

    @abc.abstractmethod
    async def _count(self, spec: Specification | None) -> int:
        """Count the documents that satisfy ``spec``."""


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidQuery(f"expected_version must be an int >= 1, got {version!r}")


class ReadModelBackend(Protocol):
    """What an entry point in group ``uno.cqrs.read_models`` names.

    An implementer guarantees that ``from_url`` returns an open repository for
    a URL of its scheme, and raises ``ReadModelConfigurationError`` for a
    malformed one.
    """

    async def from_url(self, url: str, model: type[Any], **options: Any) -> RepositoryBase[Any]:
        """Open a repository of ``model`` documents at ``url``."""
        ...


def installed_read_model_backends() -> list[str]:
    """Return the URL schemes of every installed read-model backend, sorted."""
    return sorted({ep.name for ep in entry_points(group=BACKENDS_GROUP)})


def _backend(scheme: str) -> ReadModelBackend:
    found = entry_points(group=BACKENDS_GROUP, name=scheme)
    if not found:
        raise UnknownReadModelBackend(scheme, installed_read_model_backends())
    entry_point = next(iter(found))
    try:
        backend: ReadModelBackend = entry_point.load()
    except ImportError as exc:
        raise UnknownReadModelBackend(
            scheme, installed_read_model_backends(), missing=f"{entry_point.value} ({exc})"
        ) from exc
    return backend


@asynccontextmanager
async def open_repository(
    url: str, model: type[D], **options: Any
) -> AsyncIterator[RepositoryBase[D]]:
    """Open the repository of ``model`` documents at ``url``; close it on leaving the block.

    ``memory://``, ``sqlite:///path/to/read.db`` and ``postgresql://user@host/db``
    are built in (PostgreSQL needs the ``[postgres]`` extra). Options go to the
    backend: ``name``, ``indexes``, ``changes``, ``max_page_size``,
    ``cursor_secret``, ``auto_migrate``, ``schema``, ``table_prefix``...

    Raises:
        UnknownReadModelBackend: no installed backend handles the scheme.
        ReadModelConfigurationError: the URL has no scheme.
    """
    scheme, separator, _ = url.partition("://")
    if not separator or not scheme:
        raise ReadModelConfigurationError(
            f"{url!r} is not a read-model URL; use memory://, sqlite:///read.db or postgresql://..."
        )
    repository = await _backend(scheme.lower()).from_url(url, model, **options)
    try:
        yield repository
    finally:
        await repository.close()
