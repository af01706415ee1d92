"""Compile specifications, orders and keyset bounds to parameterized SQL.

Values always travel as parameters. Field paths are embedded in the SQL text
(so that expression indexes match), which is safe because a path's segments
are field names of the document type, checked to be identifiers.

Every predicate is written so that, outside a ``NOT``, SQL's NULL (a null or
missing field) acts as false; ``NOT`` wraps its operand in ``COALESCE(.., false)``.
So the two-valued logic of ``Specification.matches`` holds in SQL too.
"""

# ruff: noqa: S608 - SQL is built from validated table names and field paths; values are parameters

from __future__ import annotations

import abc
import functools
import json
from collections.abc import Sequence

from uno.cqrs.read_models._documents import FieldPath, Index
from uno.cqrs.read_models._specifications import (
    And,
    Comparison,
    Contains,
    In,
    IsNull,
    Not,
    Or,
    Specification,
    StartsWith,
)

__all__ = ["Dialect", "OrderKey", "PostgresDialect", "SQLiteDialect"]

OrderKey = tuple[FieldPath, bool]
"""A field to order by, and whether descending."""

_OPERATORS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class Dialect(abc.ABC):
    """What differs between SQL databases: placeholders, field expressions, literals."""

    placeholder: str
    true: str
    false: str
    document_column: str
    """How a query reads the whole document as JSON text."""

    @abc.abstractmethod
    def field(self, path: FieldPath) -> str:
        """Return the scalar expression of a str, int, float or bool field (NULL when null)."""

    @abc.abstractmethod
    def parameter(self, path: FieldPath, value: object) -> object:
        """Return ``value`` as the parameter compared with ``field(path)``."""

    @abc.abstractmethod
    def json_value(self, path: FieldPath) -> str:
        """Return the expression of a field's JSON (any kind), NULL or JSON null when null."""

    @abc.abstractmethod
    def in_list(self, path: FieldPath, count: int) -> tuple[str, bool]:
        """Return the SQL after ``field IN`` for ``count`` values, and whether it takes a list."""

    @abc.abstractmethod
    def contains_element(self, path: FieldPath, value: object) -> tuple[str, list[object]]:
        """Return a predicate: the list field holds an element equal to ``value``."""

    @abc.abstractmethod
    def contains_text(self, expr: str) -> str:
        """Return a predicate: the string ``expr`` holds the next parameter."""

    @abc.abstractmethod
    def starts_with(self, expr: str) -> tuple[str, int]:
        """Return a predicate: ``expr`` starts with the parameter, and how often it is bound."""

    @abc.abstractmethod
    def is_null(self, path: FieldPath) -> str:
        """Return a predicate: the field (of any kind) is missing or null."""

    @abc.abstractmethod
    def index(self, table: str, name: str, index: Index, path: FieldPath) -> str | None:
        """Return the ``CREATE INDEX`` of a declared index, or None if this database skips it."""

    # -- shared ------------------------------------------------------------------

    @functools.cached_property
    def _fields(self) -> dict[FieldPath, str]:
        return {}

    def _field(self, path: FieldPath) -> str:
        """``field(path)``, memoized: a path's SQL never changes."""
        found = self._fields.get(path)
        if found is None:
            found = self._fields[path] = self.field(path)
        return found

    def where(self, spec: Specification) -> tuple[str, list[object]]:
        """Compile ``spec`` to a predicate and its parameters."""
        params: list[object] = []
        return self._compile(spec, params), params

    def _compile(  # noqa: PLR0911, PLR0912 - one branch per kind of specification
        self, spec: Specification, params: list[object]
    ) -> str:
        p = self.placeholder
        if isinstance(spec, Comparison):
            params.append(self.parameter(spec.path, spec.value))
            return f"{self._field(spec.path)} {_OPERATORS[spec.op]} {p}"
        if isinstance(spec, In):
            if not spec.values:
                return self.false
            tail, as_list = self.in_list(spec.path, len(spec.values))
            values = [self.parameter(spec.path, v) for v in spec.values]
            if as_list:
                params.append(values)
            else:
                params.extend(values)
            return f"{self._field(spec.path)} {tail}"
        if isinstance(spec, Contains):
            if spec.path.kind == "str":
                params.append(spec.value)
                return self.contains_text(self._field(spec.path))
            sql, more = self.contains_element(spec.path, spec.value)
            params.extend(more)
            return sql
        if isinstance(spec, StartsWith):
            sql, times = self.starts_with(self._field(spec.path))
            params.extend([spec.prefix] * times)
            return sql
        if isinstance(spec, IsNull):
            test = self.is_null(spec.path)
            return test if spec.null else f"NOT ({test})"
        if isinstance(spec, And):
            if not spec.parts:
                return self.true
            return "(" + " AND ".join(self._compile(s, params) for s in spec.parts) + ")"
        if isinstance(spec, Or):
            if not spec.parts:
                return self.false
            return "(" + " OR ".join(self._compile(s, params) for s in spec.parts) + ")"
        if isinstance(spec, Not):
            return f"NOT COALESCE({self._compile(spec.part, params)}, {self.false})"
        raise TypeError(f"cannot compile {spec!r}")  # pragma: no cover - every kind is above

    def order_by(self, order: Sequence[OrderKey]) -> str:
        """Return the ``ORDER BY`` clause: nulls first ascending, last descending, then id."""
        terms = [
            f"{self.field(path)} DESC NULLS LAST" if desc else f"{self.field(path)} ASC NULLS FIRST"
            for path, desc in order
        ]
        return "ORDER BY " + ", ".join([*terms, "id ASC"])

    def after(
        self, order: Sequence[OrderKey], values: Sequence[object], last_id: object
    ) -> tuple[str, list[object]]:
        """Return a predicate for the rows that come after ``(values, last_id)`` in ``order``."""
        p = self.placeholder
        params, alternatives = self._bind_after(order, values)
        alternatives.append(" AND ".join([*self._equalities(order, values, params), f"id > {p}"]))
        params.append(last_id)
        return "(" + " OR ".join(f"({a})" for a in alternatives) + ")", params

    def _equalities(
        self, order: Sequence[OrderKey], values: Sequence[object], params: list[object]
    ) -> list[str]:
        out = []
        for (path, _), value in zip(order, values, strict=True):
            expr = self.field(path)
            if value is None:
                out.append(f"{expr} IS NULL")
            else:
                out.append(f"{expr} = {self.placeholder}")
                params.append(self.parameter(path, value))
        return out

    def _bind_after(
        self, order: Sequence[OrderKey], values: Sequence[object]
    ) -> tuple[list[object], list[str]]:
        p = self.placeholder
        params: list[object] = []
        alternatives: list[str] = []
        for i, ((path, desc), value) in enumerate(zip(order, values, strict=True)):
            expr = self.field(path)
            if value is None and desc:
                continue  # nothing sorts after a null, descending
            head = self._equalities(order[:i], values[:i], params)
            if value is None:
                later = f"{expr} IS NOT NULL"
            elif desc:
                later = f"({expr} < {p} OR {expr} IS NULL)"
                params.append(self.parameter(path, value))
            else:
                later = f"{expr} > {p}"
                params.append(self.parameter(path, value))
            alternatives.append(" AND ".join([*head, later]))
        return params, alternatives


def _segments_sqlite(path: FieldPath) -> str:
    return "'$." + ".".join(path.segments) + "'"


def _segments_postgres(path: FieldPath) -> str:
    return "'{" + ",".join(path.segments) + "}'"


class SQLiteDialect(Dialect):
    """SQLite with JSON1: ``json_extract`` on a ``doc`` TEXT column; BINARY (code point) order."""

    placeholder = "?"
    true = "1"
    false = "0"
    document_column = "doc"

    def field(self, path: FieldPath) -> str:
        return f"json_extract(doc, {_segments_sqlite(path)})"

    def parameter(self, path: FieldPath, value: object) -> object:
        return int(value) if isinstance(value, bool) else value

    def json_value(self, path: FieldPath) -> str:
        return f"doc -> {_segments_sqlite(path)}"

    def in_list(self, path: FieldPath, count: int) -> tuple[str, bool]:
        return "IN (" + ", ".join("?" * count) + ")", False

    def contains_element(self, path: FieldPath, value: object) -> tuple[str, list[object]]:
        where = _segments_sqlite(path)
        types = {
            "str": "'text'",
            "int": "'integer', 'real'",
            "float": "'integer', 'real'",
            "bool": "'true', 'false'",
        }[path.element or "str"]
        sql = (
            f"(json_type(doc, {where}) = 'array' AND EXISTS (SELECT 1 FROM json_each(doc, "
            f"{where}) AS e WHERE e.type IN ({types}) AND e.value = ?))"
        )
        return sql, [int(value) if isinstance(value, bool) else value]

    def contains_text(self, expr: str) -> str:
        return f"instr({expr}, ?) > 0"

    def starts_with(self, expr: str) -> tuple[str, int]:
        # substr and length count characters; no LIKE, so % _ \ are literal.
        return f"substr({expr}, 1, length(?)) = ?", 2

    def is_null(self, path: FieldPath) -> str:
        return f"{self.field(path)} IS NULL"

    def index(self, table: str, name: str, index: Index, path: FieldPath) -> str | None:
        if index.using == "gin":
            return None
        return f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({self.field(path)})"


class PostgresDialect(Dialect):
    """PostgreSQL JSONB on a ``doc`` column; strings ordered ``COLLATE "C"`` (code point)."""

    placeholder = "%s"
    true = "true"
    false = "false"
    document_column = "doc::text"

    def field(self, path: FieldPath) -> str:
        text = f"(doc #>> {_segments_postgres(path)})"
        if path.kind == "str":
            return f'({text} COLLATE "C")'
        if path.kind == "int":
            return f"({text}::numeric)"
        if path.kind == "float":
            return f"({text}::float8)"
        return text  # bool: 'false' < 'true'

    def parameter(self, path: FieldPath, value: object) -> object:
        if isinstance(value, bool):
            return "true" if value else "false"
        if path.kind == "float" and isinstance(value, int):
            return float(value)
        return value

    def json_value(self, path: FieldPath) -> str:
        return f"doc #> {_segments_postgres(path)}"

    def in_list(self, path: FieldPath, count: int) -> tuple[str, bool]:
        cast = {"str": "text[]", "int": "numeric[]", "float": "float8[]", "bool": "text[]"}
        return f"= ANY(%s::{cast[path.kind]})", True

    def contains_element(self, path: FieldPath, value: object) -> tuple[str, list[object]]:
        return f"(doc #> {_segments_postgres(path)}) @> %s::jsonb", [json.dumps([value])]

    def contains_text(self, expr: str) -> str:
        return f"strpos({expr}, %s) > 0"

    def starts_with(self, expr: str) -> tuple[str, int]:
        return f"starts_with({expr}, %s)", 1

    def is_null(self, path: FieldPath) -> str:
        return f"(doc #>> {_segments_postgres(path)}) IS NULL"

    def index(self, table: str, name: str, index: Index, path: FieldPath) -> str | None:
        if index.using == "gin":
            return (
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin "
                f"((doc #> {_segments_postgres(path)}) jsonb_path_ops)"
            )
        return f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({self.field(path)})"
