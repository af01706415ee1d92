"""The ranges of a store method's arguments, checked before any backend sees them.

Every backend gets the same ``InvalidArgument`` for the same bad value, where
a driver would raise its own error (psycopg's ``NumericValueOutOfRange``,
sqlite3's ``OverflowError``) or silently store something else (``1.5`` as 2,
``True`` as 1). The ranges are those of the narrowest column that holds the
value on any backend: PostgreSQL's ``bigint`` for positions and ``integer``
for stream versions.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from uno.events import Direction, validate_stream_id
from uno.events.exceptions import MAX_STREAM_ID_LENGTH, InvalidArgument, InvalidStreamId

__all__ = [
    "MAX_POSITION",
    "MAX_VERSION",
    "check_count",
    "check_direction",
    "check_position",
    "check_stream_prefix",
    "check_type_names",
    "check_version",
    "encode_stream_metadata",
]

MAX_POSITION = 2**63 - 1
"""The largest global position, count or limit: PostgreSQL's ``bigint``."""

MAX_VERSION = 2**31 - 1
"""The largest stream version: PostgreSQL's ``integer``."""


def _int_in(parameter: str, value: object, low: int, high: int, what: str) -> int:
    if type(value) is int and low <= value <= high:
        return value
    raise InvalidArgument(parameter, value, f"{what} from {low:,} to {high:,}")


def check_position(parameter: str, value: object) -> int:
    """Return ``value`` if it is a global position (an ``int`` >= 0), else raise."""
    return _int_in(parameter, value, 0, MAX_POSITION, "an int global position")


def check_count(parameter: str, value: object, *, low: int = 0) -> int:
    """Return ``value`` if it is a count or limit (an ``int`` >= ``low``), else raise."""
    return _int_in(parameter, value, low, MAX_POSITION, "an int")


def check_version(parameter: str, value: object, *, low: int = 0) -> int:
    """Return ``value`` if it is a stream version (an ``int`` >= ``low``), else raise."""
    return _int_in(parameter, value, low, MAX_VERSION, "an int stream version")


def check_direction(value: object) -> Direction:
    """Return ``value`` if it is a ``Direction``: a string would read forwards unnoticed."""
    if isinstance(value, Direction):
        return value
    raise InvalidArgument("direction", value, "Direction.FORWARDS or Direction.BACKWARDS")


def _check_name(parameter: str, value: object, what: str) -> str:
    """Return ``value`` if it is a str that a stream id could hold (empty allowed)."""
    if not isinstance(value, str):
        raise InvalidArgument(parameter, value, what)
    if value:
        try:
            validate_stream_id(value)
        except InvalidStreamId as exc:
            raise InvalidArgument(
                parameter, value, f"{what} of at most {MAX_STREAM_ID_LENGTH} printable characters"
            ) from exc
    return value


def check_stream_prefix(value: object) -> str | None:
    """Return ``value`` if it is ``None`` or a stream id prefix, else raise."""
    if value is None:
        return None
    return _check_name("stream_prefix", value, "None or a str")


def check_type_names(value: object) -> tuple[str, ...] | None:
    """Return ``event_types`` as a sorted tuple of distinct names, ``None`` for no filter."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        # A str is a collection of one-letter names: almost surely a forgotten list.
        raise InvalidArgument("event_types", value, "None or a collection of event type names")
    for index, name in enumerate(value):
        _check_name(f"event_types[{index}]", name, "an event type name (a str)")
    return tuple(sorted(set(value)))


def encode_stream_metadata(value: object, limit: int) -> bytes:
    """Return stream metadata as JSON if it reads back as given and fits ``limit`` bytes."""
    if not isinstance(value, Mapping):
        raise InvalidArgument("metadata", value, "a mapping of str keys to JSON values")
    given = dict(value)
    try:
        raw = msgspec.json.encode(given)
    except RecursionError:
        raise InvalidArgument(
            "metadata", value, "JSON without a reference cycle (a list or dict inside itself)"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument("metadata", value, f"JSON-serializable ({exc})") from None
    if len(raw) > limit:
        raise InvalidArgument(
            "metadata",
            value,
            f"at most {limit:,} bytes as JSON (it is {len(raw):,}; the store's max_event_size)",
        )
    if not _reads_back(given, msgspec.json.decode(raw)):
        raise InvalidArgument(
            "metadata",
            value,
            "JSON that reads back as given: str keys, and finite floats (JSON has no NaN "
            "or infinity)",
        )
    return raw


def _reads_back(given: Any, stored: Any) -> bool:
    """Tell whether ``stored`` (decoded JSON) is what ``given`` meant."""
    if isinstance(given, float):
        return math.isfinite(given) and given == stored
    if isinstance(given, Mapping):
        return (
            isinstance(stored, dict)
            and all(type(key) is str for key in given)
            and len(given) == len(stored)
            and all(key in stored and _reads_back(item, stored[key]) for key, item in given.items())
        )
    if isinstance(given, (list, tuple)):
        return (
            isinstance(stored, list)
            and len(given) == len(stored)
            and all(_reads_back(a, b) for a, b in zip(given, stored, strict=True))
        )
    return True  # str, int, bool, None, and values msgspec writes as strings
