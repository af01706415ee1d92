"""Whether msgspec's bytes of an event can be decoded back into its class.

msgspec encodes what it is given without checking it against the field types:
a ``str`` in an ``int`` field is written as a string, and JSON writes a float
NaN or infinity as ``null``. Decoding such bytes into the class fails, so a
store that accepted them would hold an event no reader can read.

A serializer runs two checks. The quick one is compiled once per class into a
Python function of ``type(value) is T`` tests on the fields (and
``math.isfinite`` on JSON floats): it answers "certainly readable" for the
common event at the cost of a few attribute reads. When it cannot say (a
value of a subclass, an ``int`` in a ``float`` field, a type it does not
model, such as ``Any`` or a union), the exact check decodes the bytes with the
class's decoder and, for JSON, looks for non-finite floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from msgspec import inspect

__all__ = ["QuickCheck", "compile_checked_encoder", "first_unwritable"]

QuickCheck = Callable[[Any], bool]
"""``True``: the event certainly reads back; ``False``: run the exact check."""

_LEAVES: dict[type[inspect.Type], type] = {
    inspect.IntType: int,
    inspect.StrType: str,
    inspect.BoolType: bool,
    inspect.BytesType: bytes,
    inspect.DateTimeType: datetime,
    inspect.DateType: date,
    inspect.TimeType: time,
    inspect.TimeDeltaType: timedelta,
    inspect.UUIDType: UUID,
    inspect.DecimalType: Decimal,
}
_COLLECTIONS: dict[type[inspect.Type], type] = {
    inspect.ListType: list,
    inspect.VarTupleType: tuple,
    inspect.SetType: set,
    inspect.FrozenSetType: frozenset,
}


def _never(_value: Any) -> bool:
    return False


def _of_type(values: Iterable[Any], cls: type) -> bool:
    """Return whether every value is exactly of ``cls`` (the loop runs in C)."""
    return not set(map(type, values)).difference((cls,))


def _all_finite(values: Iterable[float]) -> bool:
    return all(map(math.isfinite, values))


class _Compiler:
    """Builds the quick check of a struct class, and of the structs its fields hold."""

    def __init__(self, *, finite_floats: bool) -> None:
        self.finite_floats = finite_floats
        self.names: dict[str, Any] = {
            "isfinite": math.isfinite,
            "of_type": _of_type,
            "all_finite": _all_finite,
        }
        self._building: set[type] = set()

    def struct(self, cls: type) -> QuickCheck:
        """Return the quick check of a struct held in a field."""
        body = self._body(cls)
        if body is None:
            return _never
        check: QuickCheck = self._build(
            f"def check(event, type=type):\n        return {body}", "check"
        )
        return check

    def encoder(
        self, cls: type, encode: Callable[[Any], bytes], slow: Callable[[Any, bytes], bytes]
    ) -> Callable[[Any], bytes]:
        """Return ``encode`` followed by the quick check, and ``slow`` when it cannot say.

        One function, not the codec and a check called apart: the call it
        saves is a tenth of what the check costs.
        """
        self.names["encode"], self.names["slow"] = encode, slow
        body = self._body(cls) or "False"
        checked: Callable[[Any], bytes] = self._build(
            "def checked(event, type=type):\n"
            "        data = encode(event)\n"
            f"        if {body}:\n"
            "            return data\n"
            "        return slow(event, data)",
            "checked",
        )
        return checked

    def _body(self, cls: type) -> str | None:
        """Return the expression of ``cls``'s quick check on ``event``, ``None`` if it has none."""
        info = inspect.type_info(cls)
        assert isinstance(info, inspect.StructType)
        self._building.add(cls)
        tests: list[str] = []
        for field in info.fields:
            test = self._test(field.type, f"event.{field.name}")
            if test is None:
                return None
            tests.append(f"({test})")
        self._building.discard(cls)
        return " and ".join(tests) or "True"

    def _build(self, function: str, name: str) -> Any:
        # A closure over the names: its cells read faster than a module's globals.
        names = ", ".join(self.names)
        source = f"def make({names}):\n    {function}\n    return {name}\n"
        namespace: dict[str, Any] = {}
        exec(source, namespace)  # noqa: S102 - source built from field names msgspec validated
        return namespace["make"](**self.names)

    def _name(self, value: Any) -> str:
        name = f"T{len(self.names)}"
        self.names[name] = value
        return name

    def _test(self, t: inspect.Type, v: str) -> str | None:  # noqa: PLR0911 - one per kind
        """Return a Python expression that is true when ``v`` certainly reads back as ``t``."""
        if isinstance(t, inspect.UnionType):
            others = [member for member in t.types if not isinstance(member, inspect.NoneType)]
            if len(others) != 1 or len(t.types) != 2:
                return None
            test = self._test(others[0], v)
            return None if test is None else f"{v} is None or {test}"
        if isinstance(t, inspect.StructType):
            if t.cls in self._building:  # a recursive definition: decode to be sure
                return None
            check = self.struct(t.cls)
            if check is _never:
                return None
            return f"type({v}) is {self._name(t.cls)} and {self._name(check)}({v})"
        collection = _COLLECTIONS.get(type(t))
        if collection is not None:
            item = self._items(t.item_type, v)  # type: ignore[attr-defined]
            return None if item is None else f"type({v}) is {self._name(collection)} and {item}"
        if isinstance(t, inspect.DictType):
            keys = self._items(t.key_type, f"{v}.keys()")
            values = self._items(t.value_type, f"{v}.values()")
            if keys is None or values is None:
                return None
            return f"type({v}) is dict and {keys} and {values}"
        return self._scalar_test(t, v)

    def _scalar_test(self, t: inspect.Type, v: str) -> str | None:
        if isinstance(t, inspect.NoneType):
            return f"{v} is None"
        if isinstance(t, inspect.EnumType):
            return f"type({v}) is {self._name(t.cls)}"
        if not _unconstrained(t):
            return None
        if isinstance(t, inspect.FloatType):
            finite = f" and isfinite({v})" if self.finite_floats else ""
            return f"type({v}) is float{finite}"
        leaf = _LEAVES.get(type(t))
        return None if leaf is None else f"type({v}) is {self._name(leaf)}"

    def _items(self, t: inspect.Type, values: str) -> str | None:
        """Return an expression true when every item of ``values`` certainly reads back as ``t``."""
        if isinstance(t, inspect.FloatType) and _unconstrained(t):
            finite = f" and all_finite({values})" if self.finite_floats else ""
            return f"of_type({values}, float){finite}"
        leaf = _LEAVES.get(type(t))
        if leaf is not None and _unconstrained(t):
            return f"of_type({values}, {self._name(leaf)})"
        return None


def _unconstrained(t: inspect.Type) -> bool:
    """Return whether ``t`` carries no ``Meta`` constraint (bounds, lengths, pattern, tz)."""
    return all(getattr(t, name) is None for name in t.__struct_fields__)


def compile_checked_encoder(
    cls: type,
    encode: Callable[[Any], bytes],
    slow: Callable[[Any, bytes], bytes],
    *,
    finite_floats: bool,
) -> Callable[[Any], bytes]:
    """Return a function that encodes an event of ``cls`` and proves its bytes read back.

    It returns ``encode(event)`` when the quick check passes, and otherwise
    ``slow(event, data)``, which runs the exact check (and raises, or returns
    ``data``). ``finite_floats`` refuses NaN and infinity (JSON cannot hold them).
    """
    return _Compiler(finite_floats=finite_floats).encoder(cls, encode, slow)


def first_unwritable(value: Any, *, finite_floats: bool) -> tuple[str | None, str] | None:
    """Return ``(field path, reason)`` of the first value that cannot be stored, or ``None``.

    It finds what decoding cannot reveal: a non-finite float (when
    ``finite_floats``) and a container that contains itself. The path is
    ``None`` when the event itself is to blame (too deeply nested).
    """
    try:
        return _walk(value, "", set(), finite_floats)
    except RecursionError:
        return None, "it is nested too deeply to encode"


def _walk(value: Any, path: str, active: set[int], finite: bool) -> tuple[str | None, str] | None:
    if type(value) is float:
        if finite and not math.isfinite(value):
            return path or None, f"{value!r} is a NaN or infinity, which JSON cannot hold"
        return None
    children: Iterable[tuple[str, Any]]
    if isinstance(value, msgspec.Struct):
        children = (
            (f"{path}.{name}" if path else name, getattr(value, name))
            for name in value.__struct_fields__
        )
    elif isinstance(value, dict):
        children = _entries(value, path)
    elif isinstance(value, list | tuple | set | frozenset):
        children = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    if id(value) in active:
        return path or None, "the value contains itself"
    active.add(id(value))
    for child_path, child in children:
        found = _walk(child, child_path, active, finite)
        if found is not None:
            return found
    active.discard(id(value))
    return None


def _entries(mapping: dict[Any, Any], path: str) -> Iterable[tuple[str, Any]]:
    for key, item in mapping.items():
        yield f"{path}[{key!r}]", key
        yield f"{path}[{key!r}]", item
