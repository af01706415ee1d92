"""Specifications: checked when built, and the same documents on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from uno.cqrs.exceptions import CqrsError
from uno.cqrs.read_models import (
    InMemoryRepository,
    InvalidSpecification,
    RepositoryBase,
    Specification,
    Where,
    and_,
    not_,
    open_repository,
    or_,
)
from uno.event_storage.testing import postgres_url

__all__ = ["postgres_url"]  # the fixture

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Inner(BaseModel):
    s: str | None = None
    k: int | None = None


class Doc(BaseModel):
    id: str
    name: str
    n: int | None = None
    x: float | None = None
    flag: bool | None = None
    tags: list[str] = []
    nums: list[int] = []
    inner: Inner | None = None


class Point(msgspec.Struct):
    id: int
    label: str
    weight: float = 0.0


where = Where(Doc)

# -- built-time checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: where.eq("nmae", "x"), "no field 'nmae'"),
        (lambda: where.eq("inner.zz", 1), "no field 'zz'"),
        (lambda: where.eq("name.deeper", "x"), "no field 'deeper'"),
        (lambda: where.eq("n", "1"), "needs a number"),
        (lambda: where.eq("n", 1.5), "needs an int"),
        (lambda: where.eq("n", True), "needs a number"),
        (lambda: where.eq("n", 2**63), "64-bit"),
        (lambda: where.eq("x", float("nan")), "not finite"),
        (lambda: where.eq("name", 3), "needs a str"),
        (lambda: where.eq("name", None), "is_null"),
        (lambda: where.eq("name", "a\x00b"), "NUL"),
        (lambda: where.startswith("name", "\ud800"), "surrogate"),
        (lambda: where.eq(["name"], "a"), "non-empty string"),  # type: ignore[arg-type]
        (lambda: where.eq("flag", 1), "needs a bool"),
        (lambda: where.lt("flag", True), "does not apply to a bool field"),
        (lambda: where.eq("tags", "a"), "does not apply to a list field"),
        (lambda: where.startswith("n", "1"), "does not apply to a int field"),
        (lambda: where.contains("nums", "1"), "needs a number"),
        (lambda: where.contains("nums", 1.5), "needs an int"),
        (lambda: where.in_("name", "abc"), "list or tuple"),
        (lambda: where.is_null("name", "yes"), "takes a bool"),  # type: ignore[arg-type]
        (lambda: where.gt("inner", 1), "does not apply to a object field"),
    ],
)
def test_a_specification_that_does_not_fit_the_model_fails_when_built(
    build: Any, message: str
) -> None:
    with pytest.raises(InvalidSpecification, match=message) as caught:
        build()
    assert isinstance(caught.value, CqrsError)
    assert caught.value.code == "cqrs.invalid_specification"


def test_specifications_of_two_models_do_not_combine() -> None:
    points = Where(Point)
    with pytest.raises(InvalidSpecification, match="same document type"):
        _ = where.eq("name", "a") & points.eq("label", "a")


def test_operators_build_the_same_tree_as_the_functions() -> None:
    a, b, c = where.eq("name", "a"), where.gt("n", 1), where.is_null("x")
    assert ((a & b) | ~c).canonical() == or_(and_(a, b), not_(c)).canonical()
    assert (~~a).canonical() == a.canonical()
    assert (a & (b & c)).canonical() == ["and", a.canonical(), b.canonical(), c.canonical()]


def test_a_float_field_takes_an_int_and_compares_numerically() -> None:
    spec = where.eq("x", 2)
    assert spec.matches({"x": 2.0})
    assert not spec.matches({"x": 2.5})


def test_msgspec_structs_are_documents_too() -> None:
    points = Where(Point)
    assert points.ge("weight", 1).matches({"weight": 1.5})
    with pytest.raises(InvalidSpecification):
        points.eq("label", 1)


def test_null_and_missing_fields_match_only_is_null() -> None:
    document: dict[str, Any] = {"id": "1", "name": "a", "inner": None}
    assert where.is_null("n").matches(document)
    assert where.is_null("inner.s").matches(document)
    assert not where.ne("n", 1).matches(document)
    assert not where.lt("n", 1).matches(document)
    assert (~where.eq("n", 1)).matches(document)
    assert not where.in_("n", [1, 2]).matches(document)


# -- the three backends agree --------------------------------------------------------------

ALPHABET = "aAbB%_\\'é\u0301ß\u03a3\u03c3😀\U0010fffd\uffff z0"  # Greek sigmas: case
texts = st.text(alphabet=ALPHABET, max_size=4)
ints = st.integers(min_value=-3, max_value=3) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.sampled_from([-1.5, -0.0, 0.0, 0.1, 0.30000000000000004, 1.0, 2.0, 1e300, -1e-300])
inner = st.builds(Inner, s=st.none() | texts, k=st.none() | ints)
documents = st.lists(
    st.builds(
        Doc,
        id=st.text(alphabet="ab01Zé", min_size=1, max_size=3),
        name=texts,
        n=st.none() | ints,
        x=st.none() | floats | st.integers(-2, 2).map(float),
        flag=st.none() | st.booleans(),
        tags=st.lists(texts, max_size=3),
        nums=st.lists(ints, max_size=3),
        inner=st.none() | inner,
    ),
    max_size=10,
    unique_by=lambda d: d.id,
)

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": texts,
    "n": ints,
    "x": floats | st.integers(-2, 2),
    "flag": st.booleans(),
    "inner.s": texts,
    "inner.k": ints,
}
_ORDERED = ["name", "n", "x", "inner.s", "inner.k"]


def _leaf() -> st.SearchStrategy[Specification]:
    comparison = st.sampled_from(list(_VALUES)).flatmap(
        lambda f: st.tuples(
            st.just(f),
            st.sampled_from(["eq", "ne"] + (["lt", "le", "gt", "ge"] if f in _ORDERED else [])),
            _VALUES[f],
        )
    )
    return st.one_of(
        comparison.map(lambda t: getattr(where, t[1])(t[0], t[2])),
        st.sampled_from(list(_VALUES)).flatmap(
            lambda f: st.lists(_VALUES[f], max_size=3).map(lambda vs: where.in_(f, vs))
        ),
        st.tuples(st.sampled_from(["name", "inner.s"]), texts).map(lambda t: where.startswith(*t)),
        st.tuples(st.sampled_from(["name", "inner.s"]), texts).map(lambda t: where.contains(*t)),
        texts.map(lambda v: where.contains("tags", v)),
        ints.map(lambda v: where.contains("nums", v)),
        st.tuples(st.sampled_from([*_VALUES, "tags", "inner"]), st.booleans()).map(
            lambda t: where.is_null(*t)
        ),
    )


specifications = st.recursive(
    _leaf(),
    lambda inner_specs: st.one_of(
        st.lists(inner_specs, min_size=1, max_size=3).map(lambda ps: and_(*ps)),
        st.lists(inner_specs, min_size=1, max_size=3).map(lambda ps: or_(*ps)),
        inner_specs.map(not_),
    ),
    max_leaves=6,
)
orders = st.lists(
    st.tuples(st.sampled_from([*_ORDERED, "flag"]), st.booleans()).map(
        lambda t: ("-" if t[1] else "") + t[0]
    ),
    max_size=3,
    unique_by=lambda f: f.lstrip("-"),
)


@pytest.fixture
async def sql_repositories(
    tmp_path: Path, postgres_url: str
) -> AsyncIterator[list[RepositoryBase[Doc]]]:
    """A SQLite and a PostgreSQL repository of ``Doc``, each in a fresh database or schema."""
    schema = f"uno_test_{uuid.uuid4().hex[:12]}"
    try:
        async with (
            open_repository(f"sqlite:///{tmp_path / 'read.db'}", Doc, auto_migrate=True) as lite,
            open_repository(postgres_url, Doc, auto_migrate=True, schema=schema) as pg,
        ):
            yield [lite, pg]
    finally:
        import psycopg  # noqa: PLC0415

        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _walk(
    repository: RepositoryBase[Doc], spec: Specification, order: list[str]
) -> list[str]:
    """Return the ids of every page of 3, following the cursors."""
    query = repository.query().filter(spec).order_by(*order)
    ids: list[str] = []
    cursor = None
    for _ in range(20):
        page = await query.page(3, after=cursor)
        ids += [d.id for d in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return ids
    raise AssertionError("the pages never ended")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=documents, spec=specifications, order=orders)
async def test_random_specifications_return_the_same_documents_on_every_backend(
    sql_repositories: list[RepositoryBase[Doc]],
    docs: list[Doc],
    spec: Specification,
    order: list[str],
) -> None:
    memory = InMemoryRepository(Doc)
    await memory.upsert_many(docs)
    expected_ids = {d.id for d in docs if spec.matches(msgspec.json.decode(d.model_dump_json()))}
    query = memory.query().filter(spec).order_by(*order)
    expected = [d.id for d in await query.all()]
    assert set(expected) == expected_ids
    for repository in sql_repositories:
        await repository.clear()
        await repository.upsert_many(docs)
        found = [d.id for d in await repository.query().filter(spec).order_by(*order).all()]
        assert found == expected, repository.backend
        assert await repository.query().filter(spec).count() == len(expected)
        assert await _walk(repository, spec, order) == expected, repository.backend
    assert await _walk(memory, spec, order) == expected
