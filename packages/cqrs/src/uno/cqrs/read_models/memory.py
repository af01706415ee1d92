"""Read models in memory: the reference semantics, for tests and small services."""

from __future__ import annotations

import functools
from typing import Any, Self, TypeVar

import anyio
import msgspec

from uno.cqrs.exceptions import (
    DocumentNotFound,
    DuplicateDocument,
    ReadModelConfigurationError,
    StaleDocumentVersion,
)
from uno.cqrs.read_models._query import QueryPlan, Row
from uno.cqrs.read_models._repository import RepositoryBase
from uno.cqrs.read_models._specifications import Specification
from uno.cqrs.read_models._sql import OrderKey

__all__ = ["InMemoryRepository"]

D = TypeVar("D")


def _copy(value: Any) -> Any:
    """Return a value of a stored document that the caller may change freely."""
    if isinstance(value, dict | list):
        return msgspec.json.decode(msgspec.json.encode(value))
    return value


def _compare(a: Any, b: Any) -> int:
    """Order two field values: null first, then by value."""
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return int(a > b) - int(a < b)


def _compare_keys(
    order: tuple[OrderKey, ...], left: tuple[Any, ...], right: tuple[Any, ...]
) -> int:
    """Compare ``(values..., id)`` tuples in the query's order (ties by id, ascending)."""
    for (_, desc), a, b in zip(order, left, right, strict=False):
        found = _compare(a, b)
        if found:
            return -found if desc else found
    return _compare(left[-1], right[-1])


class InMemoryRepository(RepositoryBase[D]):
    """Documents in a dict, as JSON: queries evaluate the same JSON the SQL backends store.

    Open it with ``open_repository("memory://", Model)``. Its contents live as
    long as the object.
    """

    backend = "memory"

    def __init__(self, model: type[D], **options: Any) -> None:
        super().__init__(model, **options)
        self._rows: dict[Any, tuple[int, bytes, object]] = {}

    @classmethod
    async def from_url(cls, url: str, model: type[D], **options: Any) -> Self:
        """Open an empty repository for ``memory://``."""
        if url.partition("://")[2] not in ("", "/"):
            raise ReadModelConfigurationError(f"{url!r}: a memory:// URL takes no path")
        options.pop("auto_migrate", None)
        return cls(model, **options)

    async def migrate(self) -> None:
        """Nothing to migrate in memory."""

    async def close(self) -> None:
        """Nothing to release in memory."""

    async def _load(self, keys: list[Any]) -> dict[Any, tuple[int, bytes | str]]:
        await anyio.lowlevel.checkpoint()
        return {k: (row[0], row[1]) for k in keys if (row := self._rows.get(k)) is not None}

    def _store(self, key: Any, data: bytes, version: int) -> int:
        self._rows[key] = (version, data, msgspec.json.decode(data))
        return version

    async def _insert(self, key: Any, data: bytes) -> int:
        await anyio.lowlevel.checkpoint()
        if key in self._rows:
            raise DuplicateDocument(self.name, key)
        return self._store(key, data, 1)

    async def _upsert(self, key: Any, data: bytes) -> int:
        await anyio.lowlevel.checkpoint()
        found = self._rows.get(key)
        return self._store(key, data, 1 if found is None else found[0] + 1)

    async def _update(self, key: Any, data: bytes, expected: int) -> int:
        await anyio.lowlevel.checkpoint()
        found = self._rows.get(key)
        if found is None:
            raise DocumentNotFound(self.name, key)
        if found[0] != expected:
            raise StaleDocumentVersion(self.name, key, expected, found[0])
        return self._store(key, data, expected + 1)

    async def _delete(self, key: Any, expected: int | None) -> bool:
        await anyio.lowlevel.checkpoint()
        found = self._rows.get(key)
        if expected is not None:
            if found is None:
                raise DocumentNotFound(self.name, key)
            if found[0] != expected:
                raise StaleDocumentVersion(self.name, key, expected, found[0])
        return self._rows.pop(key, None) is not None

    async def _upsert_many(self, rows: list[tuple[Any, bytes]]) -> None:
        await anyio.lowlevel.checkpoint()
        decoded = [(key, data, msgspec.json.decode(data)) for key, data in rows]
        for key, data, document in decoded:  # nothing can fail from here on
            found = self._rows.get(key)
            self._rows[key] = (1 if found is None else found[0] + 1, data, document)

    async def _clear(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._rows.clear()

    async def _fetch(self, plan: QueryPlan) -> list[Row]:
        await anyio.lowlevel.checkpoint()
        order = plan.order
        found = [
            ((*(p.extract(doc) for p, _ in order), key), key, version, data, doc)
            for key, (version, data, doc) in self._rows.items()
            if plan.spec is None or plan.spec.matches(doc)
        ]
        by_key = functools.cmp_to_key(
            lambda a, b: _compare_keys(order, a[0], b[0])  # type: ignore[index]
        )
        found.sort(key=by_key)
        if plan.after is not None:
            bound = (*plan.after[0], plan.after[1])
            found = [row for row in found if _compare_keys(order, row[0], bound) > 0]
        end = None if plan.limit is None else plan.offset + plan.limit
        rows: list[Row] = []
        for _, key, version, data, doc in found[plan.offset : end]:
            if plan.paths is None:
                rows.append((key, version, data, ()))
            else:
                values = tuple(_copy(p.extract(doc)) for p in plan.paths)
                rows.append((key, version, None, values))
        return rows

    async def _count(self, spec: Specification | None) -> int:
        await anyio.lowlevel.checkpoint()
        if spec is None:
            return len(self._rows)
        return sum(1 for _, _, doc in self._rows.values() if spec.matches(doc))
