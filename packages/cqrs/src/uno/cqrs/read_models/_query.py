"""The query builder: filter, order, limit, offset, field selection, and keyset pages.

A ``Query`` is immutable: each method returns a new one. Nothing runs until
``all``, ``first``, ``count`` or ``page`` is awaited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from uno.cqrs.exceptions import InvalidQuery
from uno.cqrs.read_models._documents import FieldPath
from uno.cqrs.read_models._specifications import Specification, and_
from uno.cqrs.read_models._sql import OrderKey

if TYPE_CHECKING:
    from uno.cqrs.read_models._repository import RepositoryBase

__all__ = ["Page", "Query", "QueryPlan", "Row"]

R = TypeVar("R")
Row = tuple[Any, int, bytes | str | None, tuple[Any, ...]]
"""What a backend returns per document: id, version, JSON (or None), selected values."""


@dataclass(frozen=True)
class QueryPlan:
    """What a backend runs: filter, order, bounds, and either documents or field values."""

    spec: Specification | None = None
    order: tuple[OrderKey, ...] = ()
    limit: int | None = None
    offset: int = 0
    after: tuple[tuple[Any, ...], Any] | None = None
    paths: tuple[FieldPath, ...] | None = None  # None: whole documents


@dataclass(frozen=True)
class Page(Generic[R]):
    """One page of a keyset-paginated query.

    Attributes:
        items: The page's documents (or selected fields), in the query's order.
        next_cursor: Pass it as ``after`` for the next page; ``None`` on the last page.
    """

    items: list[R]
    next_cursor: str | None


class Query(Generic[R]):
    """A query over one repository; build it with ``repository.query()``."""

    def __init__(
        self,
        repository: RepositoryBase[Any],
        plan: QueryPlan,
        convert: Callable[[Row], R],
        selected: tuple[FieldPath, ...] | None = None,
    ) -> None:
        self._repository = repository
        self._plan = plan
        self._convert = convert
        self._selected = selected

    def _with(self, plan: QueryPlan) -> Query[R]:
        return Query(self._repository, plan, self._convert, self._selected)

    def filter(self, spec: Specification) -> Query[R]:
        """Keep the documents that satisfy ``spec`` (and any earlier filter)."""
        document = self._repository.document
        given: object = spec
        if not isinstance(given, Specification) or given.model is not document.cls:
            model = getattr(spec, "model", type(spec))
            raise InvalidQuery(
                f"filter() needs a Specification of {document.cls.__qualname__}, got one of "
                f"{getattr(model, '__qualname__', model)}: build it with repository.where"
            )
        plan = self._plan
        merged = spec if plan.spec is None else and_(plan.spec, spec)
        # QueryPlan(...) rather than dataclasses.replace: this is on every query's path.
        return self._with(
            QueryPlan(merged, plan.order, plan.limit, plan.offset, plan.after, plan.paths)
        )

    def order_by(self, *fields: str) -> Query[R]:
        """Order by these fields (``"-name"`` descending); ties are broken by id, ascending.

        Nulls come first in ascending order and last in descending order;
        strings by code point. Replaces an earlier order.
        """
        keys: list[OrderKey] = []
        for name in fields:
            given: object = name
            if not isinstance(given, str) or not given.lstrip("-"):
                raise InvalidQuery(
                    f"order_by takes field names such as 'name' or '-name', not {name!r}"
                )
            desc = name.startswith("-")
            path = self._repository.document.path(name[1:] if desc else name, error=InvalidQuery)
            if path.kind not in ("str", "int", "float", "bool"):
                raise InvalidQuery(
                    f"cannot order by {path.dotted!r}, a {path.kind} field: order by a str, "
                    "int, float or bool field"
                )
            keys.append((path, desc))
        return self._with(replace(self._plan, order=tuple(keys)))

    def limit(self, count: int) -> Query[R]:
        """Return at most ``count`` documents (at most the repository's ``max_page_size``)."""
        return self._with(replace(self._plan, limit=self._repository.check_page_size(count)))

    def offset(self, count: int) -> Query[R]:
        """Skip the first ``count`` documents (offset pagination)."""
        if type(count) is not int or count < 0:
            raise InvalidQuery(f"offset must be an int >= 0, got {count!r}")
        return self._with(replace(self._plan, offset=count))

    def select(self, *fields: str) -> Query[dict[str, Any]]:
        """Return only these fields, as dicts keyed by the dotted names (None when null)."""
        if not fields:
            raise InvalidQuery("select() needs at least one field name")
        paths = tuple(self._repository.document.path(f, error=InvalidQuery) for f in fields)
        names = tuple(p.dotted for p in paths)

        def convert(row: Row) -> dict[str, Any]:
            return dict(zip(names, row[3], strict=False))

        return Query(self._repository, self._plan, convert, paths)

    # -- running -------------------------------------------------------------------

    def _paths(self) -> tuple[FieldPath, ...] | None:
        if self._selected is None:
            return None
        extra = tuple(p for p, _ in self._plan.order if p not in self._selected)
        return self._selected + extra

    async def all(self) -> list[R]:
        """Return every matching document (bounded only by ``limit``)."""
        rows = await self._repository._fetch(replace(self._plan, paths=self._paths()))
        return [self._convert(row) for row in rows]

    async def first(self) -> R | None:
        """Return the first matching document, or None."""
        plan = replace(self._plan, limit=1, paths=self._paths())
        rows = await self._repository._fetch(plan)
        return self._convert(rows[0]) if rows else None

    async def count(self) -> int:
        """Count the matching documents (ignores order, limit and offset)."""
        return await self._repository._count(self._plan.spec)

    async def page(self, size: int, *, after: str | None = None) -> Page[R]:
        """Return a page of ``size`` documents after the cursor ``after`` (keyset pagination).

        Pages stay consistent while documents are written: each starts after
        the last document of the previous one in the query's order, so no
        document is skipped or repeated unless its sort fields changed.

        Raises:
            PageSizeTooLarge: ``size`` is over the repository's ``max_page_size``.
            InvalidCursor: ``after`` was changed, or belongs to another query.
        """
        size = self._repository.check_page_size(size)
        if self._plan.offset or self._plan.limit is not None:
            raise InvalidQuery(
                "page() does not combine with offset() or limit(): use one or the other"
            )
        fingerprint = self._fingerprint()
        codec = self._repository.cursors
        bound = None
        if after is not None:
            values, last_id = codec.decode(after, fingerprint, len(self._plan.order))
            bound = (tuple(values), last_id)
        paths = self._paths()
        plan = replace(self._plan, limit=size + 1, after=bound, paths=paths)
        rows = await self._repository._fetch(plan)
        more = len(rows) > size
        rows = rows[:size]
        cursor = None
        if more and rows:
            last = rows[-1]
            values = self._sort_values(last, paths)
            cursor = codec.encode(fingerprint, values, last[0])
        return Page([self._convert(row) for row in rows], cursor)

    def _fingerprint(self) -> bytes:
        spec = None if self._plan.spec is None else self._plan.spec.canonical()
        order = [[p.dotted, desc] for p, desc in self._plan.order]
        return msgspec.json.encode([self._repository.document.name, spec, order])

    def _sort_values(self, row: Row, paths: Sequence[FieldPath] | None) -> list[Any]:
        if paths is None:
            assert row[2] is not None
            decoded = msgspec.json.decode(row[2])
            return [path.extract(decoded) for path, _ in self._plan.order]
        where = {p: i for i, p in enumerate(paths)}
        return [row[3][where[path]] for path, _ in self._plan.order]
