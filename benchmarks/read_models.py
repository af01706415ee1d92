"""Read models: get by id, a 3-predicate specification query and a 1,000-document bulk upsert.

uno's repositories on SQLite and PostgreSQL against hand-written sqlite3 and
psycopg code running the same SQL (taken from uno's compiler, so the
statements are identical) and decoding the same pydantic documents. The
hand-written SQLite code runs in a thread too (anyio), as uno does, so that
neither blocks the event loop. The target: uno at least 0.8 times as fast
as the hand-written code (hand-written time / uno time >= 0.8).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio.to_thread
from pydantic import BaseModel

from benchmarks._harness import Settings, Timing, compare, machine_facts, markdown_table, verdict
from uno.cqrs.read_models import Index, ReadModelOptions, RepositoryBase, open_repository

__all__ = ["BenchAccount", "run"]

GETS, QUERIES, BULKS = 2_000, 300, 10
DOCUMENTS = 10_000
TARGET = 0.8


class BenchAccount(BaseModel):
    read_model: ClassVar[ReadModelOptions] = ReadModelOptions(
        name="bench_accounts", indexes=(Index("owner"), Index("balance"))
    )

    id: str
    owner: str
    balance: int
    city: str
    tags: list[str] = []


def _documents(count: int, salt: str = "") -> list[BenchAccount]:
    return [
        BenchAccount(
            id=f"acct-{i:06}{salt}",
            owner=f"owner-{i % 500}",
            balance=i % 1000,
            city=("Oslo", "Bergen", "Tromsø")[i % 3],
            tags=["vip"] if i % 7 == 0 else [],
        )
        for i in range(count)
    ]


def _spec(repository: RepositoryBase[BenchAccount]) -> Any:
    w = repository.where
    return w.eq("owner", "owner-42") & w.gt("balance", 100) & w.startswith("city", "Os")


def _runner(
    loop: asyncio.AbstractEventLoop, ops: int, one: Callable[[int], Awaitable[object]]
) -> Callable[[], None]:
    async def many() -> None:
        for i in range(ops):
            await one(i)

    return lambda: loop.run_until_complete(many())


async def _sqlite_cases(loop: asyncio.AbstractEventLoop, folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / "bench.db"
    repo_cm = open_repository(f"sqlite:///{path}", BenchAccount, auto_migrate=True)
    repository = await repo_cm.__aenter__()
    await repository.upsert_many(_documents(DOCUMENTS))
    table = repository.table  # type: ignore[attr-defined]
    statement, params = repository._sql.select(  # type: ignore[attr-defined]
        repository.query().filter(_spec(repository))._plan
    )
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    limiter = anyio.CapacityLimiter(1)
    decode = BenchAccount.model_validate_json
    upsert = (
        f"INSERT INTO {table} AS t (id, version, doc) VALUES (?, 1, ?) "  # noqa: S608
        "ON CONFLICT (id) DO UPDATE SET version = t.version + 1, doc = excluded.doc"
    )

    async def raw_get(i: int) -> object:
        def get() -> object:
            row = raw.execute(
                f"SELECT id, version, doc FROM {table} WHERE id IN (?)",  # noqa: S608
                (f"acct-{i % DOCUMENTS:06}",),
            ).fetchone()
            return decode(row[2])

        return await anyio.to_thread.run_sync(get, limiter=limiter)

    async def raw_query(_: int) -> object:
        def query() -> object:
            return [decode(row[2]) for row in raw.execute(statement, params)]

        return await anyio.to_thread.run_sync(query, limiter=limiter)

    async def raw_bulk(i: int) -> None:
        rows = [(d.id, d.model_dump_json()) for d in _documents(1000, f"-raw-{i % 3}")]

        def bulk() -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.executemany(upsert, rows)
            raw.execute("COMMIT")

        await anyio.to_thread.run_sync(bulk, limiter=limiter)

    async def uno_bulk(i: int) -> None:
        await repository.upsert_many(_documents(1000, f"-uno-{i % 3}"))

    async def close() -> None:
        raw.close()
        await repo_cm.__aexit__(None, None, None)

    return {
        "get": {"uno": lambda i: repository.get(f"acct-{i % DOCUMENTS:06}"), "raw": raw_get},
        "query": {"uno": lambda _: repository.find(_spec(repository)), "raw": raw_query},
        "bulk": {"uno": uno_bulk, "raw": raw_bulk},
        "close": {"close": close},
    }


async def _postgres_cases(loop: asyncio.AbstractEventLoop, url: str) -> dict[str, dict[str, Any]]:
    import psycopg  # noqa: PLC0415

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    repo_cm = open_repository(url, BenchAccount, auto_migrate=True, schema=schema)
    repository = await repo_cm.__aenter__()
    await repository.upsert_many(_documents(DOCUMENTS))
    table = repository.table  # type: ignore[attr-defined]
    statement, params = repository._sql.select(  # type: ignore[attr-defined]
        repository.query().filter(_spec(repository))._plan
    )
    raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
    decode = BenchAccount.model_validate_json
    upsert = (
        f"INSERT INTO {table} AS t (id, version, doc) "  # noqa: S608
        "SELECT i, 1, d::jsonb FROM unnest(%s::text[], %s::text[]) AS u(i, d) "
        "ON CONFLICT (id) DO UPDATE SET version = t.version + 1, doc = excluded.doc"
    )

    async def raw_get(i: int) -> object:
        cursor = await raw.execute(
            f"SELECT id, version, doc::text FROM {table} WHERE id = ANY(%s::text[])",  # noqa: S608
            [[f"acct-{i % DOCUMENTS:06}"]],
        )
        row = await cursor.fetchone()
        assert row is not None
        return decode(row[2])

    async def raw_query(_: int) -> object:
        cursor = await raw.execute(statement, params)
        return [decode(row[2]) for row in await cursor.fetchall()]

    async def raw_bulk(i: int) -> None:
        documents = _documents(1000, f"-raw-{i % 3}")
        async with raw.transaction():
            await raw.execute(
                upsert, [[d.id for d in documents], [d.model_dump_json() for d in documents]]
            )

    async def uno_bulk(i: int) -> None:
        await repository.upsert_many(_documents(1000, f"-uno-{i % 3}"))

    async def close() -> None:
        await raw.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await raw.close()
        await repo_cm.__aexit__(None, None, None)

    return {
        "get": {"uno": lambda i: repository.get(f"acct-{i % DOCUMENTS:06}"), "raw": raw_get},
        "query": {"uno": lambda _: repository.find(_spec(repository)), "raw": raw_query},
        "bulk": {"uno": uno_bulk, "raw": raw_bulk},
        "close": {"close": close},
    }


_OPS = {"get": GETS, "query": QUERIES, "bulk": BULKS}
_TITLES = {
    "get": "get by id",
    "query": "3-predicate specification",
    "bulk": "bulk upsert of 1,000",
}


def _postgres_url() -> str | None:
    url = os.environ.get("UNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg  # noqa: PLC0415

        psycopg.connect(url, connect_timeout=2).close()
    except Exception:  # any failure means: no PostgreSQL to measure
        return None
    return url


def run(settings: Settings) -> str:
    """Time uno and hand-written code on SQLite and PostgreSQL; return the markdown section."""
    loop = asyncio.new_event_loop()
    rows: list[list[str]] = []
    ratio_rows: list[list[str]] = []
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            backends: list[tuple[str, dict[str, dict[str, Any]]]] = [
                ("SQLite", loop.run_until_complete(_sqlite_cases(loop, Path(folder))))
            ]
            url = _postgres_url()
            if url is None:
                notes.append("PostgreSQL was not reachable: its rows are missing.")
            else:
                backends.append(("PostgreSQL", loop.run_until_complete(_postgres_cases(loop, url))))
            try:
                for backend, cases in backends:
                    for case, ops in _OPS.items():
                        timed = compare(
                            {
                                "uno": _runner(loop, ops, cases[case]["uno"]),
                                "hand-written": _runner(loop, ops, cases[case]["raw"]),
                            },
                            ops=ops,
                            repeats=settings.repeats,
                        )
                        uno, raw = timed
                        _row(rows, ratio_rows, backend, _TITLES[case], uno, raw)
            finally:
                for _, cases in backends:
                    loop.run_until_complete(cases["close"]["close"]())
    finally:
        loop.close()
    results = markdown_table(
        ["Backend", "Operation", "uno µs (median)", "hand-written µs (median)"],
        rows,
        align="llrr",
    )
    ratios = markdown_table(["Comparison", "Ratio", "Target", "Result"], ratio_rows, align="lrrl")
    note = ("\n\n" + " ".join(notes)) if notes else ""
    return f"""\
## Read models

What is measured: on a table of {DOCUMENTS:,} documents, a get by id
({GETS:,} times), a specification of three predicates (`eq` on an indexed
field, `gt` on an indexed field, `startswith`: {QUERIES:,} times) and a bulk
upsert of 1,000 documents in one transaction ({BULKS} times), through uno's
repositories and through hand-written sqlite3 / psycopg code that runs the
same SQL and decodes the same pydantic documents. Times per operation; the
ratio is the hand-written time over uno's (1.0 means as fast).

{results}

{ratios}{note}

{machine_facts(["uno-cqrs", "pydantic", "psycopg"])} Median of {settings.repeats} runs.
"""


def _row(  # noqa: PLR0917 - the two tables, then one result
    rows: list[list[str]],
    ratio_rows: list[list[str]],
    backend: str,
    title: str,
    uno: Timing,
    raw: Timing,
) -> None:
    rows.append([backend, title, f"{uno.median_us:.1f}", f"{raw.median_us:.1f}"])
    ratio = raw.median_ns / uno.median_ns
    ratio_rows.append(
        [
            f"{backend}, {title}: hand-written's time / uno's",
            f"{ratio:.2f}x",
            f"≥ {TARGET}x",
            verdict(ratio, at_least=TARGET),
        ]
    )
