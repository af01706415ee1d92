"""The SQL of one read model's table, written once for both SQL backends."""

# ruff: noqa: S608 - SQL is built from validated table names and field paths; values are parameters

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from uno.cqrs.read_models._documents import DocumentType
from uno.cqrs.read_models._query import QueryPlan
from uno.cqrs.read_models._specifications import Specification
from uno.cqrs.read_models._sql import Dialect

__all__ = ["TableStatements"]


@dataclass(frozen=True)
class TableStatements:
    """Statements over the table ``table`` (already quoted and qualified)."""

    table: str
    dialect: Dialect
    document: DocumentType[object]

    def index_statements(self, index_prefix: str) -> list[str]:
        """Return the ``CREATE INDEX IF NOT EXISTS`` of every declared index this database has."""
        out = []
        for index in self.document.indexes:
            path = self.document.path(index.field)
            digest = hashlib.sha256(f"{index.field}:{index.using}".encode()).hexdigest()[:8]
            name = f"{index_prefix}{self.document.name}_{path.dotted.replace('.', '_')}"[:50]
            sql = self.dialect.index(self.table, f"{name}_{digest}", index, path)
            if sql is not None:
                out.append(sql)
        return out

    def select(self, plan: QueryPlan) -> tuple[str, list[object]]:
        """Return the SELECT of a query plan and its parameters."""
        if plan.paths is None:
            columns = f"id, version, {self.dialect.document_column}"
        else:
            selected = [self.dialect.json_value(p) for p in plan.paths]
            columns = ", ".join(["id", "version", *selected])
        sql = [f"SELECT {columns} FROM {self.table}"]
        params: list[object] = []
        conditions = []
        if plan.spec is not None:
            where, more = self.dialect.where(plan.spec)
            conditions.append(where)
            params += more
        if plan.after is not None:
            values, last_id = plan.after
            after, more = self.dialect.after(plan.order, values, last_id)
            conditions.append(after)
            params += more
        if conditions:
            sql.append("WHERE " + " AND ".join(conditions))
        sql.append(self.dialect.order_by(plan.order))
        p = self.dialect.placeholder
        if plan.limit is not None:
            sql.append(f"LIMIT {p}")
            params.append(plan.limit)
        if plan.offset:
            if plan.limit is None and p == "?":
                sql.append("LIMIT -1")
            sql.append(f"OFFSET {p}")
            params.append(plan.offset)
        return " ".join(sql), params

    def count(self, spec: Specification | None) -> tuple[str, list[object]]:
        """Return the COUNT of the documents that satisfy ``spec``."""
        if spec is None:
            return f"SELECT count(*) FROM {self.table}", []
        where, params = self.dialect.where(spec)
        return f"SELECT count(*) FROM {self.table} WHERE {where}", params
