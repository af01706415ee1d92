"""Read-model repositories on memory, SQLite and PostgreSQL: CRUD, versions, queries, pages."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import anyio
import msgspec
import psycopg
import pytest
from pydantic import BaseModel

from uno.cqrs._changes import ReadModelChanges
from uno.cqrs.read_models import (
    DocumentNotFound,
    DuplicateDocument,
    Index,
    InvalidCursor,
    InvalidDocument,
    InvalidQuery,
    PageSizeTooLarge,
    ReadModelConfigurationError,
    ReadModelNotMigrated,
    ReadModelOptions,
    ReadModelUnavailable,
    RepositoryBase,
    StaleDocumentVersion,
    UnknownReadModelBackend,
    open_repository,
)
from uno.event_storage.testing import postgres_url

__all__ = ["postgres_url"]  # the fixture

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Address(BaseModel):
    city: str | None = None
    zip: str | None = None


class Account(BaseModel):
    read_model: ClassVar[ReadModelOptions] = ReadModelOptions(
        name="accounts", indexes=(Index("owner"), Index("balance"), Index("tags", using="gin"))
    )

    id: str
    owner: str
    balance: int = 0
    tags: list[str] = []
    address: Address | None = None


class Point(msgspec.Struct):
    id: int
    label: str
    weight: float = 0.0


Opener = Callable[..., AbstractAsyncContextManager[RepositoryBase[Any]]]


async def _drop_schema(url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def open_repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Open repositories of one backend (the same database each time), cleaned up after."""
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    url, base = "memory://", dict[str, Any]()
    if request.param == "sqlite":
        url, base = f"sqlite:///{tmp_path / 'read.db'}", {"auto_migrate": True}
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        base = {"auto_migrate": True, "schema": schema}

    @asynccontextmanager
    async def opener(model: type[Any] = Account, **options: Any) -> AsyncIterator[Any]:
        async with open_repository(url, model, **{**base, **options}) as repository:
            yield repository

    try:
        yield opener
    finally:
        if request.param == "postgres":
            await _drop_schema(url, schema)


@pytest.fixture
async def accounts(open_repo: Opener) -> AsyncIterator[RepositoryBase[Account]]:
    async with open_repo() as repository:
        yield repository


def ann(**changes: Any) -> Account:
    return Account(**{"id": "a-1", "owner": "ann", "balance": 10, **changes})


# -- CRUD and versions -------------------------------------------------------------------------


async def test_add_stores_a_document_at_version_1_and_get_returns_an_equal_copy(
    accounts: RepositoryBase[Account],
) -> None:
    document = ann(tags=["x"], address=Address(city="Berlin"))
    assert await accounts.add(document) == 1
    assert await accounts.get("a-1") == document
    assert await accounts.get("a-2") is None
    found = await accounts.get_versioned("a-1")
    assert found is not None
    assert found.version == 1


async def test_add_of_a_stored_id_raises_duplicate_document_and_keeps_the_first(
    accounts: RepositoryBase[Account],
) -> None:
    await accounts.add(ann())
    with pytest.raises(DuplicateDocument) as caught:
        await accounts.add(ann(owner="mallory"))
    assert caught.value.document_id == "a-1"
    assert (await accounts.get("a-1")) == ann()


async def test_upsert_inserts_then_replaces_and_counts_versions(
    accounts: RepositoryBase[Account],
) -> None:
    assert await accounts.upsert(ann()) == 1
    assert await accounts.upsert(ann(balance=20)) == 2
    found = await accounts.get_versioned("a-1")
    assert found is not None
    assert (found.document.balance, found.version) == (20, 2)


async def test_update_at_the_stored_version_writes_and_a_stale_one_raises_with_the_actual(
    accounts: RepositoryBase[Account],
) -> None:
    await accounts.add(ann())
    assert await accounts.update(ann(balance=11), expected_version=1) == 2
    with pytest.raises(StaleDocumentVersion) as caught:
        await accounts.update(ann(balance=99), expected_version=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert (await accounts.get("a-1")) == ann(balance=11)
    with pytest.raises(DocumentNotFound):
        await accounts.update(ann(id="a-9"), expected_version=1)
    assert await accounts.get("a-9") is None


async def test_delete_removes_and_a_versioned_delete_checks_the_version(
    accounts: RepositoryBase[Account],
) -> None:
    await accounts.add(ann())
    await accounts.add(ann(id="a-2"))
    with pytest.raises(StaleDocumentVersion):
        await accounts.delete("a-1", expected_version=3)
    assert await accounts.get("a-1") is not None
    assert await accounts.delete("a-1", expected_version=1) is True
    assert await accounts.delete("a-1") is False
    with pytest.raises(DocumentNotFound):
        await accounts.delete("a-1", expected_version=1)
    assert await accounts.delete("a-2") is True
    assert await accounts.query().count() == 0


async def test_get_many_returns_the_found_documents_in_the_order_asked(
    accounts: RepositoryBase[Account],
) -> None:
    await accounts.upsert_many([ann(id=f"a-{i}", balance=i) for i in range(5)])
    found = await accounts.get_many(["a-3", "zz", "a-0", "a-3"])
    assert [d.id for d in found] == ["a-3", "a-0"]
    assert await accounts.get_many([]) == []


async def test_bulk_upsert_of_1000_documents_writes_all_and_bumps_versions(
    accounts: RepositoryBase[Account],
) -> None:
    await accounts.add(ann(id="a-0007"))
    documents = [ann(id=f"a-{i:04}", balance=i) for i in range(1000)]
    assert await accounts.upsert_many(documents) == 1000
    assert await accounts.query().count() == 1000
    replaced = await accounts.get_versioned("a-0007")
    fresh = await accounts.get_versioned("a-0008")
    assert replaced is not None
    assert fresh is not None
    assert (replaced.version, replaced.document.balance, fresh.version) == (2, 7, 1)


async def test_a_bulk_upsert_with_one_bad_document_writes_nothing(
    accounts: RepositoryBase[Account],
) -> None:
    documents = [ann(id=f"a-{i}") for i in range(10)]
    documents[5] = ann(id="a-5", owner="nul\x00here")
    with pytest.raises(InvalidDocument, match="NUL"):
        await accounts.upsert_many(documents)
    with pytest.raises(InvalidDocument, match="two documents"):
        await accounts.upsert_many([ann(), ann()])
    assert await accounts.query().count() == 0


async def test_a_document_of_another_type_is_refused(accounts: RepositoryBase[Any]) -> None:
    with pytest.raises(InvalidDocument, match="expected a Account"):
        await accounts.add(Point(id=1, label="x"))
    with pytest.raises(InvalidDocument, match="strings"):
        await accounts.get(1)


async def test_msgspec_documents_with_int_ids(open_repo: Opener) -> None:
    async with open_repo(Point, name="points") as points:
        await points.upsert_many([Point(id=i, label=f"p{i}", weight=i / 2) for i in range(12)])
        assert await points.get(3) == Point(id=3, label="p3", weight=1.5)
        heavy = points.query().filter(points.where.ge("weight", 4)).order_by("-weight")
        assert [p.id for p in await heavy.all()] == [11, 10, 9, 8]
        ids = [p.id for p in await points.query().all()]
        assert ids == list(range(12))  # int ids order numerically


async def test_clear_deletes_every_document(accounts: RepositoryBase[Account]) -> None:
    await accounts.upsert_many([ann(id=f"a-{i}") for i in range(3)])
    await accounts.clear()
    assert await accounts.query().count() == 0


async def test_each_committed_write_tells_the_changes_listeners(open_repo: Opener) -> None:
    changes = ReadModelChanges()
    told: list[str] = []
    changes.subscribe("accounts", told.append)
    async with open_repo(changes=changes) as accounts:
        await accounts.add(ann())
        await accounts.upsert(ann(balance=1))
        await accounts.update(ann(balance=2), expected_version=2)
        with pytest.raises(StaleDocumentVersion):
            await accounts.update(ann(balance=3), expected_version=1)
        await accounts.upsert_many([ann(id="b")])
        assert await accounts.delete("zz") is False
        await accounts.delete("b")
    assert told == ["accounts"] * 5


async def test_concurrent_updates_at_one_version_let_exactly_one_win(open_repo: Opener) -> None:
    """Two repositories on the same database (two pools or writer connections) race."""
    async with open_repo() as first, open_repo() as other:
        second = first if first.backend == "memory" else other
        await first.add(ann())
        outcomes: list[str] = []

        async def update(repository: RepositoryBase[Account], balance: int) -> None:
            try:
                await repository.update(ann(balance=balance), expected_version=1)
                outcomes.append("won")
            except StaleDocumentVersion:
                outcomes.append("stale")

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(update, first if i % 2 else second, i)
        assert sorted(outcomes) == ["stale"] * 7 + ["won"]
        found = await first.get_versioned("a-1")
        assert found is not None
        assert found.version == 2


# -- bad input is stored and matched literally ---------------------------------------------

HOSTILE = [
    "'; DROP TABLE accounts; --",
    '" OR 1=1 --',
    "%",
    "_",
    "\\",
    "a%b_c\\d",
    "$.owner",
    "{a,b}",
    "Ünïcødé 😀 \U0010fffd",
]


async def test_hostile_strings_are_stored_and_matched_literally(
    accounts: RepositoryBase[Account],
) -> None:
    await accounts.upsert_many(
        [ann(id=f"h{i}", owner=text, tags=[text]) for i, text in enumerate(HOSTILE)]
    )
    w = accounts.where
    for i, text in enumerate(HOSTILE):
        assert [d.id for d in await accounts.find(w.eq("owner", text))] == [f"h{i}"]
        assert [d.id for d in await accounts.find(w.contains("tags", text))] == [f"h{i}"]
        starts = {f"h{j}" for j, other in enumerate(HOSTILE) if other.startswith(text)}
        assert {d.id for d in await accounts.find(w.startswith("owner", text))} == starts
        inside = {f"h{j}" for j, other in enumerate(HOSTILE) if text in other}
        assert {d.id for d in await accounts.find(w.contains("owner", text))} == inside
    assert await accounts.query().count() == len(HOSTILE)


async def test_a_one_megabyte_string_round_trips_and_matches(
    accounts: RepositoryBase[Account],
) -> None:
    big = "x" * (1 << 20) + "é"
    document = ann(address=Address(city=big))
    await accounts.add(document)
    await accounts.add(ann(id="a-2", address=Address(city=big[:-1])))
    assert (await accounts.get("a-1")) == document
    w = accounts.where
    assert [d.id for d in await accounts.find(w.eq("address.city", big))] == ["a-1"]
    assert len(await accounts.find(w.startswith("address.city", big[:-1]))) == 2
    assert len(await accounts.find(w.contains("address.city", "xé"))) == 1


async def test_a_nul_character_is_refused_on_write_and_in_a_specification(
    accounts: RepositoryBase[Account],
) -> None:
    with pytest.raises(InvalidDocument, match="NUL"):
        await accounts.add(ann(owner="a\x00b"))
    with pytest.raises(InvalidDocument, match="NUL"):
        await accounts.add(ann(address=Address(city="\x00")))
    with pytest.raises(InvalidDocument, match="encoded as JSON"):
        await accounts.add(ann(owner="lone \ud800 surrogate"))
    assert await accounts.query().count() == 0
    await accounts.add(ann(owner="literal \\u0000 is fine"))
    assert (await accounts.get("a-1")) == ann(owner="literal \\u0000 is fine")


# -- queries and pages ------------------------------------------------------------------------


async def _seed(accounts: RepositoryBase[Account]) -> None:
    await accounts.upsert_many(
        [
            Account(id="1", owner="ann", balance=30, tags=["vip"], address=Address(city="Oslo")),
            Account(id="2", owner="bob", balance=10, address=Address(city="Bergen")),
            Account(id="3", owner="Ann", balance=30),
            Account(id="4", owner="cid", balance=-5, tags=["vip", "new"]),
            Account(id="5", owner="dan", balance=10, address=Address()),
        ]
    )


async def test_filter_order_limit_offset_and_select(accounts: RepositoryBase[Account]) -> None:
    await _seed(accounts)
    w = accounts.where
    by_balance = accounts.query().order_by("-balance", "owner")
    assert [d.id for d in await by_balance.all()] == ["3", "1", "2", "5", "4"]
    assert [d.id for d in await by_balance.offset(1).limit(2).all()] == ["1", "2"]
    vip = accounts.query().filter(w.contains("tags", "vip")).filter(w.gt("balance", 0))
    assert [d.id for d in await vip.all()] == ["1"]
    first = await accounts.query().order_by("owner").first()
    assert first is not None
    assert first.id == "3"  # "Ann" < "ann": code points, case-sensitive
    cities = await accounts.query().order_by("address.city").select("owner", "address.city").all()
    assert cities == [
        {"owner": "Ann", "address.city": None},
        {"owner": "cid", "address.city": None},
        {"owner": "dan", "address.city": None},
        {"owner": "bob", "address.city": "Bergen"},
        {"owner": "ann", "address.city": "Oslo"},
    ]
    tags = await accounts.query().filter(w.eq("id", "4")).select("tags", "address").all()
    assert tags == [{"tags": ["vip", "new"], "address": None}]


async def test_pages_follow_signed_cursors_to_the_end(accounts: RepositoryBase[Account]) -> None:
    await accounts.upsert_many([ann(id=f"a-{i:02}", balance=i % 4) for i in range(23)])
    query = accounts.query().order_by("-balance")
    expected = [d.id for d in await query.all()]
    seen: list[str] = []
    cursor = None
    while True:
        page = await query.page(5, after=cursor)
        seen += [d.id for d in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    selected = await query.select("owner").page(30)
    assert len(selected.items) == 23
    assert selected.next_cursor is None


async def test_a_tampered_or_foreign_cursor_is_an_invalid_cursor(
    open_repo: Opener,
) -> None:
    async with open_repo() as accounts, open_repo(cursor_secret=b"k" * 32) as other:
        await accounts.upsert_many([ann(id=f"a-{i}") for i in range(5)])
        query = accounts.query().order_by("owner")
        cursor = (await query.page(2)).next_cursor
        assert cursor is not None
        head, tail = cursor.split(".")
        flipped = head[:-2] + ("A" if head[-2] != "A" else "B") + head[-1]
        for bad in [f"{flipped}.{tail}", cursor + "x", "nonsense", "a.b", f"{head}.{head}"]:
            with pytest.raises(InvalidCursor):
                await query.page(2, after=bad)
        with pytest.raises(InvalidCursor, match="another query"):
            await accounts.query().order_by("-owner").page(2, after=cursor)
        with pytest.raises(InvalidCursor, match="another query"):
            await query.filter(accounts.where.eq("owner", "x")).page(2, after=cursor)
        with pytest.raises(InvalidCursor, match="signature"):
            await other.query().order_by("owner").page(2, after=cursor)


async def test_oversized_or_invalid_page_sizes_are_typed_errors(open_repo: Opener) -> None:
    async with open_repo(max_page_size=50) as accounts:
        with pytest.raises(PageSizeTooLarge) as caught:
            await accounts.query().page(51)
        assert (caught.value.asked, caught.value.most) == (51, 50)
        with pytest.raises(PageSizeTooLarge):
            accounts.query().limit(10_000)
        for bad in (0, -1, True, 2.5):
            with pytest.raises(InvalidQuery):
                await accounts.query().page(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidQuery):
            accounts.query().offset(-1)
        with pytest.raises(InvalidQuery, match="no field"):
            accounts.query().order_by("nope")
        with pytest.raises(InvalidQuery, match="cannot order"):
            accounts.query().order_by("tags")
        with pytest.raises(InvalidQuery, match="Specification of Account"):
            accounts.query().filter("owner = 'x'")  # type: ignore[arg-type]


# -- schema, opening, configuration -------------------------------------------------------------


async def test_unknown_schemes_and_bad_urls_are_configuration_errors() -> None:
    with pytest.raises(UnknownReadModelBackend, match="misspelled or not installed") as caught:
        async with open_repository("mongodb://x", Account):
            pass
    assert "sqlite" in caught.value.installed
    with pytest.raises(ReadModelConfigurationError, match="not a read-model URL"):
        async with open_repository("read.db", Account):
            pass
    with pytest.raises(ReadModelConfigurationError, match="names no database file"):
        async with open_repository("sqlite:///:memory:", Account):
            pass


def test_a_model_without_an_id_or_with_a_bad_index_is_refused() -> None:
    from uno.cqrs.read_models import InMemoryRepository  # noqa: PLC0415

    class NoId(BaseModel):
        name: str

    with pytest.raises(ReadModelConfigurationError, match="id field"):
        InMemoryRepository(NoId)
    with pytest.raises(ReadModelConfigurationError, match="no field"):
        InMemoryRepository(Account, indexes=[Index("nope")])
    with pytest.raises(ReadModelConfigurationError, match="gin"):
        InMemoryRepository(Account, indexes=[Index("owner", using="gin")])


async def test_sqlite_refuses_an_unmigrated_file_and_migrates_with_indexes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'read.db'}"
    with pytest.raises(ReadModelNotMigrated) as caught:
        async with open_repository(url, Account):
            pass
    assert (caught.value.have, caught.value.want) == (0, 1)
    async with open_repository(url, Account, auto_migrate=True) as accounts:
        await accounts.migrate()  # again: a no-op
    async with open_repository(url, Account) as accounts:
        await accounts.add(ann())
    with sqlite3.connect(tmp_path / "read.db") as conn:
        versions = conn.execute(
            "SELECT read_model, version FROM rm_read_model_migrations"
        ).fetchall()
        indexes = [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rm_accounts' "
                "AND sql IS NOT NULL"
            )
        ]
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM rm_accounts WHERE json_extract(doc, '$.owner') = ?",
            ("ann",),
        ).fetchall()
    conn.close()
    assert versions == [("accounts", 1)]
    assert len(indexes) == 2  # owner and balance; SQLite has no GIN
    assert any("USING INDEX" in str(row) for row in plan)


async def test_postgres_creates_expression_and_gin_indexes_that_queries_use(
    postgres_url: str,
) -> None:
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    try:
        async with open_repository(
            postgres_url, Account, auto_migrate=True, schema=schema
        ) as accounts:
            await accounts.upsert_many([ann(id=f"a-{i}", owner=f"o{i}") for i in range(2000)])
            w = accounts.where
            statement, params = accounts._sql.select(  # type: ignore[attr-defined]
                accounts.query().filter(w.eq("owner", "o7") & w.contains("tags", "x"))._plan
            )
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT indexdef FROM pg_indexes "
                "WHERE schemaname = %s AND tablename = 'rm_accounts'",
                [schema],
            )
            definitions = [d for (d,) in await cursor.fetchall()]
            await conn.execute(f'ANALYZE "{schema}".rm_accounts')
            await conn.execute("SET enable_seqscan = off")
            explain = await conn.execute("EXPLAIN " + statement, params)
            plan = "\n".join(line for (line,) in await explain.fetchall())
            cursor = await conn.execute(
                f'SELECT read_model, version FROM "{schema}".rm_read_model_migrations'
            )
            versions = await cursor.fetchall()
    finally:
        await _drop_schema(postgres_url, schema)
    assert versions == [("accounts", 1)]
    assert any("USING gin" in d for d in definitions)
    assert any('COLLATE "C"' in d for d in definitions)
    assert "Index" in plan


async def test_postgres_down_is_read_model_unavailable() -> None:
    with pytest.raises(ReadModelUnavailable):
        async with open_repository(
            "postgresql://postgres@127.0.0.1:1/test", Account, connect_timeout=1
        ):
            pass


async def test_a_cancelled_bulk_upsert_writes_all_or_nothing(open_repo: Opener) -> None:
    async with open_repo() as accounts:
        counts = set()
        for delay in (0.0, 0.001, 0.005, 0.02):
            await accounts.clear()
            with anyio.move_on_after(delay):
                await accounts.upsert_many([ann(id=f"a-{i:04}") for i in range(1000)])
            counts.add(await accounts.query().count())
        assert counts <= {0, 1000}
