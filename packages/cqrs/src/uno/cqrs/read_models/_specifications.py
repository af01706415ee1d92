"""Specifications: predicates over documents, checked against the document type when built.

Semantics, the same on every backend (memory, SQLite, PostgreSQL):

- A field that is missing, or JSON ``null``, or under a missing or null parent,
  is *null*. Every comparison (``eq``, ``ne``, ``lt`` ... ``in_``, ``contains``,
  ``startswith``) is false on a null field; only ``is_null`` matches it. So
  ``ne("a", 1)`` does not match a document without ``a``, and ``~eq("a", 1)``
  does: ``~`` is plain boolean negation.
- Strings compare by Unicode code point, case-sensitively, with no collation;
  ``startswith`` and ``contains`` match their argument literally (``%``, ``_``
  and ``\\`` are ordinary characters).
- ``int`` and ``float`` fields compare numerically; a float field accepts an
  int value. Values are checked against the field's type when the
  specification is built: a string for an int field, a bool for a number, NaN
  or infinity, an int outside the signed 64-bit range, or a NUL character is an
  ``InvalidSpecification``.
- ``lt``/``le``/``gt``/``ge`` take str, int and float fields; ``eq``/``ne``/``in_``
  also bool fields. ``contains`` takes a string field (substring) or a list
  field (an element equal to the value). ``is_null`` takes any field.
"""

from __future__ import annotations

import math
import operator
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec

from uno.cqrs.exceptions import InvalidSpecification
from uno.cqrs.read_models._documents import INT64, DocumentType, FieldKind, FieldPath

__all__ = [
    "And",
    "Comparison",
    "Contains",
    "In",
    "IsNull",
    "Not",
    "Or",
    "Specification",
    "StartsWith",
    "Where",
    "and_",
    "not_",
    "or_",
]

D = TypeVar("D")
Operator = Literal["eq", "ne", "lt", "le", "gt", "ge"]
_ORDERED: frozenset[FieldKind] = frozenset({"str", "int", "float"})
_EQUATABLE: frozenset[FieldKind] = frozenset({"str", "int", "float", "bool"})
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


class Specification:
    """A predicate over the documents of one type; combine with ``&``, ``|`` and ``~``."""

    model: type

    def matches(self, document: object) -> bool:
        """Tell whether the decoded JSON ``document`` satisfies the predicate."""
        raise NotImplementedError

    def canonical(self) -> object:
        """Return the predicate as plain data: equal specifications give equal data."""
        raise NotImplementedError

    def fingerprint(self) -> bytes:
        """Return the canonical form encoded as JSON (binds cursors to their query)."""
        return msgspec.json.encode(self.canonical())

    def __and__(self, other: Specification) -> Specification:
        return and_(self, other)

    def __or__(self, other: Specification) -> Specification:
        return or_(self, other)

    def __invert__(self) -> Specification:
        return not_(self)


@dataclass(frozen=True, eq=False)
class Comparison(Specification):
    """``field <op> value`` for ``eq``, ``ne``, ``lt``, ``le``, ``gt`` and ``ge``."""

    model: type
    path: FieldPath
    op: Operator
    value: str | int | float | bool

    def matches(self, document: object) -> bool:
        found = self.path.extract(document)
        if found is None or not _fits(found, self.path.kind):
            return False
        return bool(_COMPARE[self.op](found, self.value))

    def canonical(self) -> object:
        return [self.op, self.path.dotted, self.value]


@dataclass(frozen=True, eq=False)
class In(Specification):
    """The field equals one of ``values`` (none: matches nothing)."""

    model: type
    path: FieldPath
    values: tuple[str | int | float | bool, ...]

    def matches(self, document: object) -> bool:
        found = self.path.extract(document)
        return found is not None and _fits(found, self.path.kind) and found in self.values

    def canonical(self) -> object:
        return ["in", self.path.dotted, list(self.values)]


@dataclass(frozen=True, eq=False)
class Contains(Specification):
    """A string field holds ``value`` as a substring, or a list field holds it as an element."""

    model: type
    path: FieldPath
    value: str | int | float | bool

    def matches(self, document: object) -> bool:
        found = self.path.extract(document)
        if self.path.kind == "str":
            return isinstance(found, str) and isinstance(self.value, str) and self.value in found
        element = self.path.element or "other"
        return isinstance(found, list) and any(
            e is not None and _fits(e, element) and e == self.value for e in found
        )

    def canonical(self) -> object:
        return ["contains", self.path.dotted, self.value]


@dataclass(frozen=True, eq=False)
class StartsWith(Specification):
    """A string field starts with ``prefix``, literally."""

    model: type
    path: FieldPath
    prefix: str

    def matches(self, document: object) -> bool:
        found = self.path.extract(document)
        return isinstance(found, str) and found.startswith(self.prefix)

    def canonical(self) -> object:
        return ["startswith", self.path.dotted, self.prefix]


@dataclass(frozen=True, eq=False)
class IsNull(Specification):
    """The field is missing or null (``null=True``), or present and not null."""

    model: type
    path: FieldPath
    null: bool = True

    def matches(self, document: object) -> bool:
        return (self.path.extract(document) is None) == self.null

    def canonical(self) -> object:
        return ["is_null", self.path.dotted, self.null]


@dataclass(frozen=True, eq=False)
class And(Specification):
    """Every part holds (no parts: always true)."""

    model: type
    parts: tuple[Specification, ...]

    def matches(self, document: object) -> bool:
        return all(part.matches(document) for part in self.parts)

    def canonical(self) -> object:
        return ["and", *(part.canonical() for part in self.parts)]


@dataclass(frozen=True, eq=False)
class Or(Specification):
    """Some part holds (no parts: always false)."""

    model: type
    parts: tuple[Specification, ...]

    def matches(self, document: object) -> bool:
        return any(part.matches(document) for part in self.parts)

    def canonical(self) -> object:
        return ["or", *(part.canonical() for part in self.parts)]


@dataclass(frozen=True, eq=False)
class Not(Specification):
    """The part does not hold."""

    model: type
    part: Specification

    def matches(self, document: object) -> bool:
        return not self.part.matches(document)

    def canonical(self) -> object:
        return ["not", self.part.canonical()]


def _fits(value: object, kind: FieldKind) -> bool:
    """Tell whether a stored JSON value is of the field's kind (guards against foreign rows)."""
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False


def _one_model(parts: Iterable[Specification]) -> tuple[type, tuple[Specification, ...]]:
    specs = tuple(parts)
    if not specs:
        raise InvalidSpecification("and_/or_ need at least one specification")
    for spec in specs:
        if not isinstance(spec, Specification):
            raise InvalidSpecification(f"{spec!r} is not a Specification")
    model = specs[0].model
    for spec in specs[1:]:
        if spec.model is not model:
            raise InvalidSpecification(
                f"cannot combine a specification of {model.__qualname__} with one of "
                f"{spec.model.__qualname__}: build both with the same document type"
            )
    return model, specs


def and_(*parts: Specification) -> Specification:
    """Return a specification that holds when every part holds."""
    model, specs = _one_model(parts)
    flat: list[Specification] = []
    for spec in specs:
        flat.extend(spec.parts if isinstance(spec, And) else (spec,))
    return flat[0] if len(flat) == 1 else And(model, tuple(flat))


def or_(*parts: Specification) -> Specification:
    """Return a specification that holds when some part holds."""
    model, specs = _one_model(parts)
    flat: list[Specification] = []
    for spec in specs:
        flat.extend(spec.parts if isinstance(spec, Or) else (spec,))
    return flat[0] if len(flat) == 1 else Or(model, tuple(flat))


def not_(part: Specification) -> Specification:
    """Return a specification that holds when ``part`` does not."""
    model, (spec,) = _one_model((part,))
    return spec.part if isinstance(spec, Not) else Not(model, spec)


class Where(Generic[D]):
    """Build specifications over one document type: ``where = Where(Account)``.

    Each method checks the field name (a dotted path for nested fields) and
    the value against the type, and raises ``InvalidSpecification`` at once::

        where.eq("owner", "ann") & (where.gt("balance", 100) | ~where.is_null("closed_at"))
    """

    def __init__(self, model: type[D] | DocumentType[D]) -> None:
        self.document = model if isinstance(model, DocumentType) else DocumentType(model)
        self.model: type = self.document.cls

    def eq(self, field: str, value: object) -> Specification:
        """The field equals ``value``."""
        return self._compare(field, "eq", value)

    def ne(self, field: str, value: object) -> Specification:
        """The field is not null and differs from ``value``."""
        return self._compare(field, "ne", value)

    def lt(self, field: str, value: object) -> Specification:
        """The field is less than ``value``."""
        return self._compare(field, "lt", value)

    def le(self, field: str, value: object) -> Specification:
        """The field is less than or equal to ``value``."""
        return self._compare(field, "le", value)

    def gt(self, field: str, value: object) -> Specification:
        """The field is greater than ``value``."""
        return self._compare(field, "gt", value)

    def ge(self, field: str, value: object) -> Specification:
        """The field is greater than or equal to ``value``."""
        return self._compare(field, "ge", value)

    def in_(self, field: str, values: Iterable[object]) -> Specification:
        """The field equals one of ``values``."""
        path = self._path(field, _EQUATABLE, "in_")
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise InvalidSpecification(
                f"in_({field!r}, ...) takes a list or tuple of values, got {values!r}"
            )
        checked = tuple(dict.fromkeys(_value(path, path.kind, v, "in_") for v in values))
        return In(self.model, path, checked)

    def contains(self, field: str, value: object) -> Specification:
        """A string field holds ``value`` as a substring; a list field holds it as an element."""
        path = self._path(field, frozenset({"str", "list"}), "contains")
        if path.kind == "list":
            element = path.element or "other"
            if element not in _EQUATABLE:
                raise InvalidSpecification(
                    f"contains({field!r}, ...) needs a list of str, int, float or bool"
                )
            return Contains(self.model, path, _value(path, element, value, "contains"))
        return Contains(self.model, path, _value(path, "str", value, "contains"))

    def startswith(self, field: str, prefix: object) -> Specification:
        """A string field starts with ``prefix`` (matched literally)."""
        path = self._path(field, frozenset({"str"}), "startswith")
        checked = _value(path, "str", prefix, "startswith")
        assert isinstance(checked, str)
        return StartsWith(self.model, path, checked)

    def is_null(self, field: str, null: bool = True) -> Specification:
        """The field is missing or null (or, with ``null=False``, is present and not null)."""
        if not isinstance(null, bool):
            raise InvalidSpecification(f"is_null({field!r}, null) takes a bool, got {null!r}")
        return IsNull(self.model, self.document.path(field), null)

    def all(self) -> Specification:
        """A specification every document satisfies."""
        return And(self.model, ())

    def _path(self, field: str, kinds: frozenset[FieldKind], op: str) -> FieldPath:
        path = self.document.path(field)
        if path.kind not in kinds:
            raise InvalidSpecification(
                f"{op}({field!r}, ...) does not apply to a {path.kind} field; it takes "
                f"{', '.join(sorted(kinds))} fields"
            )
        return path

    def _compare(self, field: str, op: Operator, value: object) -> Specification:
        kinds = _EQUATABLE if op in ("eq", "ne") else _ORDERED
        path = self._path(field, kinds, op)
        return Comparison(self.model, path, op, _value(path, path.kind, value, op))


def _value(path: FieldPath, kind: FieldKind, value: object, op: str) -> str | int | float | bool:
    """Check ``value`` against a field of ``kind``; return it as it compares."""
    if type(value) is str and kind == "str" and "\x00" not in value and value.isascii():
        return value  # the common cases first, checked cheaply
    if type(value) is int and kind in ("int", "float") and INT64[0] <= value <= INT64[1]:
        return value if kind == "int" else float(value)
    where = f"{op}({path.dotted!r}, ...)"
    if value is None:
        raise InvalidSpecification(f"{where} got None: use is_null({path.dotted!r}) for nulls")
    raw = getattr(value, "value", value) if not isinstance(value, str | int | float) else value
    if kind == "str":
        if type(value) is uuid.UUID:
            raw = str(value)
        return _text(where, value, raw)
    if kind == "bool":
        if not isinstance(raw, bool):
            raise InvalidSpecification(f"{where} needs a bool, got {value!r}")
        return raw
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidSpecification(f"{where} needs a number, got {value!r}")
    if kind == "int":
        if not isinstance(raw, int):
            raise InvalidSpecification(f"{where} is on an int field and needs an int, got {raw!r}")
        if not INT64[0] <= raw <= INT64[1]:
            raise InvalidSpecification(f"{where}: {raw} does not fit in a signed 64-bit integer")
        return raw
    number = float(raw)
    if not math.isfinite(number):
        raise InvalidSpecification(
            f"{where}: {raw!r} is not finite; JSON stores NaN and infinity as null"
        )
    return number


def _text(where: str, value: object, raw: object) -> str:
    """Check a value for a str field: a str, with no NUL and no lone surrogate."""
    if not isinstance(raw, str):
        raise InvalidSpecification(f"{where} needs a str, got {value!r}")
    if "\x00" in raw:
        raise InvalidSpecification(
            f"{where}: a NUL character (U+0000) can never be stored, so it cannot match"
        )
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidSpecification(
                f"{where}: {raw!r} holds a lone surrogate, which is not valid Unicode "
                "and can never be stored"
            ) from exc
    return raw
