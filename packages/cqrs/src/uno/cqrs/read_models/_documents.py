"""Document types: what a repository stores, how it is encoded, and which fields it can query.

A document is a pydantic model or a msgspec struct with an id field. It is
stored as its JSON encoding (pydantic's ``model_dump_json`` or
``msgspec.json.encode``), and every backend evaluates specifications over that
JSON, so the three backends see the same values.
"""

from __future__ import annotations

import enum
import re
import types
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, Union

import msgspec
import pydantic
import pydantic_core

from uno.cqrs.exceptions import (
    InvalidDocument,
    InvalidSpecification,
    ReadModelConfigurationError,
)

__all__ = [
    "DocumentType",
    "FieldKind",
    "FieldPath",
    "Index",
    "ReadModelOptions",
]

D = TypeVar("D")
FieldKind = Literal["str", "int", "float", "bool", "list", "object", "other"]
"""What a field holds in JSON; ``other`` fields are stored but cannot be queried."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Index:
    """An index declared on a document type.

    ``Index("owner")`` is a B-tree expression index on the field (PostgreSQL
    and SQLite). ``Index("tags", using="gin")`` is a PostgreSQL GIN index on a
    list field that makes ``contains`` fast; SQLite has no GIN and skips it.
    """

    field: str
    using: Literal["btree", "gin"] = "btree"


@dataclass(frozen=True)
class ReadModelOptions:
    """How a document type is stored: set ``read_model: ClassVar[ReadModelOptions]`` on it.

    Attributes:
        name: The read model's name (its table); the class name in snake case by default.
        id_field: The field that holds the document's id (``str``, ``int`` or ``UUID``).
        indexes: The indexes the schema migration creates.
    """

    name: str | None = None
    id_field: str = "id"
    indexes: tuple[Index, ...] = ()


@dataclass(frozen=True)
class FieldPath:
    """A dotted path into a document, resolved against its type when a specification is built."""

    segments: tuple[str, ...]
    kind: FieldKind
    element: FieldKind | None = None  # what a list field's elements hold

    @property
    def dotted(self) -> str:
        """The path as written: ``"address.city"``."""
        return ".".join(self.segments)

    def extract(self, document: object) -> object:
        """Return the path's value in a decoded JSON document; ``None`` when missing or null."""
        value = document
        for segment in self.segments:
            if not isinstance(value, dict):
                return None
            value = value.get(segment)
        return value


@dataclass
class _Field:
    kind: FieldKind
    element: FieldKind | None = None
    children: dict[str, _Field] = field(default_factory=dict)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _scalar_kind(tp: object) -> FieldKind:  # noqa: PLR0911 - one return per kind
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str or tp is uuid.UUID:
        return "str"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = {type(member.value) for member in tp}
        if values == {str}:
            return "str"
        if values == {int}:
            return "int"
    if typing.get_origin(tp) is Literal:
        values = {type(v) for v in typing.get_args(tp)}
        if values in ({str}, {int}, {bool}):
            return _scalar_kind(values.pop())
    return "other"


def _strip_optional(tp: object) -> object:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    if typing.get_origin(tp) is typing.Annotated:
        return _strip_optional(typing.get_args(tp)[0])
    return tp


def _describe(tp: object, seen: frozenset[type]) -> _Field:
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        homogeneous = origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)
        element = _strip_optional(args[0]) if args and homogeneous else None
        return _Field("list", _scalar_kind(element) if element is not None else "other")
    if isinstance(tp, type) and tp not in seen and _is_document_class(tp):
        return _Field("object", children=_fields_of(tp, seen | {tp}))
    return _Field(_scalar_kind(tp))


def _is_document_class(tp: type) -> bool:
    return issubclass(tp, pydantic.BaseModel | msgspec.Struct)


def _fields_of(cls: type, seen: frozenset[type]) -> dict[str, _Field]:
    if issubclass(cls, pydantic.BaseModel):
        return {name: _describe(info.annotation, seen) for name, info in cls.model_fields.items()}
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        f.encode_name: _describe(hints.get(f.name, f.type), seen)
        for f in msgspec.structs.fields(typing.cast(type[msgspec.Struct], cls))
    }


class DocumentType(Generic[D]):
    """A document class, introspected once: its name, id, fields, encoder and decoder."""

    def __init__(
        self,
        cls: type[D],
        *,
        name: str | None = None,
        indexes: tuple[Index, ...] | None = None,
    ) -> None:
        given: object = cls
        if not isinstance(given, type) or not _is_document_class(given):
            raise ReadModelConfigurationError(
                f"{cls!r} is not a document type: use a pydantic model or a msgspec struct"
            )
        options: object = getattr(cls, "read_model", None) or ReadModelOptions()
        if not isinstance(options, ReadModelOptions):
            raise ReadModelConfigurationError(
                f"{cls.__qualname__}.read_model must be a ReadModelOptions, got {options!r}"
            )
        self.cls = cls
        self.name = name or options.name or _snake(cls.__name__)
        if not _NAME.match(self.name) or len(self.name) > 48:
            raise ReadModelConfigurationError(
                f"read model name {self.name!r} must be a letter or underscore followed by "
                "letters, digits or underscores (at most 48): it names a table"
            )
        self._pydantic = issubclass(cls, pydantic.BaseModel)
        self._fields = _fields_of(cls, frozenset({cls}))
        self._paths: dict[str, FieldPath] = {}  # resolved paths, by dotted name
        self.id_field = options.id_field
        id_info = self._fields.get(self.id_field)
        if id_info is None or id_info.kind not in ("str", "int"):
            raise ReadModelConfigurationError(
                f"{cls.__qualname__} needs an id field {self.id_field!r} of type str, int or "
                "UUID (set read_model = ReadModelOptions(id_field=...) to name another)"
            )
        self.id_kind: Literal["str", "int"] = "int" if id_info.kind == "int" else "str"
        self.indexes = tuple(options.indexes if indexes is None else indexes)
        for index in self.indexes:
            path = self.path(index.field, error=ReadModelConfigurationError)
            if index.using == "gin" and path.kind not in ("list", "object"):
                raise ReadModelConfigurationError(
                    f"Index({index.field!r}, using='gin') needs a list or nested field; "
                    "use a B-tree index (the default) for a scalar"
                )
            if index.using == "btree" and path.kind not in ("str", "int", "float", "bool"):
                raise ReadModelConfigurationError(
                    f"Index({index.field!r}) needs a str, int, float or bool field; "
                    "use using='gin' for a list"
                )
        self._decoder = None if self._pydantic else msgspec.json.Decoder(cls)
        self._encoder = msgspec.json.Encoder()

    def path(self, dotted: object, *, error: type[Exception] | None = None) -> FieldPath:
        """Resolve ``"a.b"`` against the type; raise ``InvalidSpecification`` if unknown."""
        cached = self._paths.get(dotted) if isinstance(dotted, str) else None
        if cached is not None:
            return cached
        raised = error or InvalidSpecification
        if not isinstance(dotted, str) or not dotted:
            raise raised(f"a field name must be a non-empty string, got {dotted!r}")
        segments = tuple(dotted.split("."))
        fields, found = self._fields, None
        for i, segment in enumerate(segments):
            found = fields.get(segment) if _NAME.match(segment) else None
            if found is None:
                where = ".".join(segments[:i]) or self.cls.__qualname__
                known = ", ".join(sorted(fields)) or "none"
                raise raised(
                    f"{where} has no field {segment!r} (fields: {known}); "
                    f"check the spelling of {dotted!r}"
                )
            fields = found.children
        assert found is not None
        path = self._paths[dotted] = FieldPath(segments, found.kind, found.element)
        return path

    def encode(self, document: object) -> bytes:
        """Return the document's JSON; raise ``InvalidDocument`` if it cannot be stored."""
        if not isinstance(document, self.cls):
            raise InvalidDocument(
                f"expected a {self.cls.__qualname__}, got {type(document).__qualname__}: "
                "this repository stores one document type"
            )
        try:
            if self._pydantic:
                data = typing.cast(pydantic.BaseModel, document).model_dump_json().encode()
            else:
                data = self._encoder.encode(document)
        except (ValueError, TypeError, pydantic_core.PydanticSerializationError) as exc:
            raise InvalidDocument(
                f"the {self.cls.__qualname__} cannot be encoded as JSON ({exc}); "
                "give its fields JSON-encodable values"
            ) from exc
        if b"\\u0000" in data and _NUL.search(data):
            raise InvalidDocument(
                f"the {self.cls.__qualname__} holds a NUL character (U+0000) in a string, "
                "which PostgreSQL cannot store in JSON and no backend accepts; remove or "
                "replace it (e.g. with U+FFFD) before storing"
            )
        return data

    def decode(self, data: bytes | str) -> D:
        """Return the document stored as ``data``."""
        if self._decoder is not None:
            return self._decoder.decode(data)
        return typing.cast(D, typing.cast(Any, self.cls).model_validate_json(data))

    def id_of(self, document: object) -> str | int:
        """Return the document's id as stored (``UUID`` as its string)."""
        value = getattr(document, self.id_field)
        return self.key(value)

    def key(self, value: object) -> str | int:
        """Return ``value`` as a stored id; raise ``InvalidDocument`` when it cannot be one."""
        if self.id_kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidDocument(f"ids of {self.name!r} are ints, got {value!r}")
            if not INT64[0] <= value <= INT64[1]:
                raise InvalidDocument(f"id {value} does not fit in a signed 64-bit integer")
            return value
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, enum.Enum):
            value = value.value
        if not isinstance(value, str):
            raise InvalidDocument(f"ids of {self.name!r} are strings, got {value!r}")
        if "\x00" in value:
            raise InvalidDocument("an id cannot hold a NUL character (U+0000)")
        return value
