"""Errors raised by uno.events and by every event store that implements its protocols.

Every error carries a stable ``code`` (safe to match on, listed in docs/errors.md)
and a message that says what happened and what to do next::

    UnoEventsError                      events.error
    ├── EventDefinitionError            events.invalid_definition
    ├── EventRegistryError              events.registry_error
    │   ├── DuplicateEventType          events.duplicate_event_type
    │   ├── UnregisteredEvent           events.unregistered_event
    │   └── UpcasterChainError          events.upcaster_chain_broken
    ├── SerializationError              events.serialization_error
    │   ├── EventEncodeError            events.encode_failed
    │   ├── UnknownEventType            events.unknown_event_type
    │   ├── EventDecodeError            events.decode_failed
    │   └── UpcastError                 events.upcast_failed
    └── EventStoreError                 event_storage.error
        ├── WrongExpectedVersion        event_storage.wrong_expected_version
        ├── DuplicateEventId            event_storage.duplicate_event_id
        ├── StreamDeleted               event_storage.stream_deleted
        ├── InvalidStreamId             event_storage.invalid_stream_id
        ├── InvalidArgument             event_storage.invalid_argument
        ├── EventTooLarge               event_storage.event_too_large
        ├── TransactionOrderConflict    event_storage.transaction_order_conflict
        └── StoreUnavailable            event_storage.unavailable

``EventStoreError`` lives here, not in uno.event_storage, because third-party
backends depend on uno-core-events only and must raise the same types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

MAX_STREAM_ID_LENGTH = 512

__all__ = [
    "DuplicateEventId",
    "DuplicateEventType",
    "EventDecodeError",
    "EventDefinitionError",
    "EventEncodeError",
    "EventRegistryError",
    "EventStoreError",
    "EventTooLarge",
    "InvalidArgument",
    "InvalidStreamId",
    "SerializationError",
    "StoreUnavailable",
    "StreamDeleted",
    "TransactionOrderConflict",
    "UnknownEventType",
    "UnoEventsError",
    "UnregisteredEvent",
    "UpcastError",
    "UpcasterChainError",
    "WrongExpectedVersion",
]


class UnoEventsError(Exception):
    """Root of every error raised by uno.events."""

    code: ClassVar[str] = "events.error"


class EventDefinitionError(UnoEventsError, TypeError):
    """An event class declares an invalid type name or version."""

    code = "events.invalid_definition"


class EventRegistryError(UnoEventsError):
    """The event registry was configured inconsistently."""

    code = "events.registry_error"


class DuplicateEventType(EventRegistryError):
    """Two different classes were registered under one type name and version."""

    code = "events.duplicate_event_type"

    def __init__(self, event_type: str, version: int, existing: type, new: type) -> None:
        self.event_type = event_type
        self.version = version
        self.existing = existing
        self.new = new
        super().__init__(
            f"{event_type!r} version {version} is already registered to "
            f"{existing.__module__}.{existing.__qualname__}; cannot register "
            f"{new.__module__}.{new.__qualname__} too. Give one of them another "
            "event_type or a higher event_version."
        )


class UnregisteredEvent(EventRegistryError):
    """An event of a class the registry does not know was about to be written."""

    code = "events.unregistered_event"

    def __init__(self, cls: type) -> None:
        self.event_class = cls
        super().__init__(
            f"{cls.__module__}.{cls.__qualname__} is not registered, so it could not be "
            "read back. Call registry.register() with it before writing such events."
        )


class UpcasterChainError(EventRegistryError):
    """An upcaster chain has a missing, duplicated or dangling link."""

    code = "events.upcaster_chain_broken"

    def __init__(self, event_type: str, problem: str) -> None:
        self.event_type = event_type
        self.problem = problem
        super().__init__(f"Upcaster chain of {event_type!r}: {problem}")


class SerializationError(UnoEventsError):
    """An event could not be turned into bytes or back."""

    code = "events.serialization_error"


class EventEncodeError(SerializationError):
    """An event holds a value the codec cannot encode, or one it could not read back.

    ``field`` names the offending field as a path (``"amount"``,
    ``"lines[2].price"``) when one is to blame, ``None`` otherwise. The event
    was not written: a store's ``append`` raises this before it writes anything.
    """

    code = "events.encode_failed"

    def __init__(
        self, event_type: str, version: int, reason: str, *, field: str | None = None
    ) -> None:
        self.event_type = event_type
        self.version = version
        self.reason = reason
        self.field = field
        if "serialize ints" in reason:
            hint = "MessagePack holds integers up to 64 bits: use JSON, or a Decimal field"
        elif "NaN" in reason or "infinity" in reason:
            hint = (
                "JSON has no NaN or infinity (it would store null, which the float field "
                "cannot read back): store None in an optional field, or a Decimal"
            )
        elif "contains itself" in reason:
            hint = "build the value without a reference cycle (a list or dict inside itself)"
        elif field is not None:
            hint = "give the field a value of its declared type (or declare the type it holds)"
        else:
            hint = (
                "give every field a type msgspec supports (builtins, datetime, UUID, Decimal, "
                "enums, Structs) and values of that type"
            )
        where = f" in field {field!r}" if field else ""
        super().__init__(
            f"Cannot encode {event_type!r} version {version}{where}: {reason}. "
            f"Nothing was written. Fix: {hint}."
        )


def _location(stream_id: str | None, stream_version: int | None, position: int | None) -> str:
    """Return where a stored event is, for a message: `` at global position 7 (...)``."""
    if position is None and stream_id is None:
        return ""
    at = f" at global position {position}" if position is not None else ""
    if stream_id is not None:
        at += f" (stream {stream_id!r} version {stream_version})"
    return at


class UnknownEventType(SerializationError):
    """Stored data names an event type or version that no registered class handles.

    Raised by a store's read, it says where the event is: ``stream_id``,
    ``stream_version`` and ``position`` (its global position); each is ``None``
    when the serializer is called on its own. ``read_all_raw`` reads such an
    event undecoded.
    """

    code = "events.unknown_event_type"

    def __init__(
        self,
        event_type: str,
        version: int,
        known_versions: tuple[int, ...],
        *,
        stream_id: str | None = None,
        stream_version: int | None = None,
        position: int | None = None,
    ) -> None:
        self.event_type = event_type
        self.version = version
        self.known_versions = known_versions
        self.stream_id = stream_id
        self.stream_version = stream_version
        self.position = position
        if known_versions and version > max(known_versions):
            hint = (
                f"it was written by a newer release (latest registered: {max(known_versions)}); "
                f"deploy the code that defines version {version}"
            )
        elif known_versions:
            hint = (
                f"registered versions are {', '.join(map(str, known_versions))}: register "
                f"an upcaster chain starting at version {version}, or the class of that version"
            )
        else:
            hint = "register its event class (misspelled, renamed, or not imported?)"
        at = _location(stream_id, stream_version, position)
        super().__init__(f"No event class for {event_type!r} version {version}{at}; {hint}.")


class EventDecodeError(SerializationError):
    """Stored bytes do not match the event class they claim to be.

    Raised by a store's read, it says where the event is: ``stream_id``,
    ``stream_version`` and ``position`` (its global position); each is ``None``
    when the serializer is called on its own. ``field`` is the path of the
    field that failed, when msgspec names one.
    """

    code = "events.decode_failed"

    def __init__(
        self,
        event_type: str,
        version: int,
        reason: str,
        *,
        field: str | None = None,
        position: int | None = None,
        stream_id: str | None = None,
        stream_version: int | None = None,
    ) -> None:
        self.event_type = event_type
        self.version = version
        self.reason = reason
        self.field = field
        self.position = position
        self.stream_id = stream_id
        self.stream_version = stream_version
        where = f" in field {field!r}" if field else ""
        at = _location(stream_id, stream_version, position)
        super().__init__(
            f"Cannot decode {event_type!r} version {version}{at}{where}: {reason}. "
            "The data does not match the class that reads it: if the class changed, raise its "
            "event_version and register an upcaster from the stored version; if an upcaster "
            "produced it, fix the upcaster. A reader gets past it with read_all_raw."
        )


class UpcastError(SerializationError):
    """An upcaster raised, or returned something other than what it promised.

    Raised by a store's read, it carries ``stream_id``, ``stream_version`` and
    ``position`` as ``EventDecodeError`` does.
    """

    code = "events.upcast_failed"

    def __init__(
        self,
        event_type: str,
        from_version: int,
        reason: str,
        *,
        stream_id: str | None = None,
        stream_version: int | None = None,
        position: int | None = None,
    ) -> None:
        self.event_type = event_type
        self.from_version = from_version
        self.reason = reason
        self.stream_id = stream_id
        self.stream_version = stream_version
        self.position = position
        at = _location(stream_id, stream_version, position)
        super().__init__(
            f"Upcasting {event_type!r} from version {from_version} to {from_version + 1}{at} "
            f"failed: {reason}. Fix the upcaster; the stored event is unchanged."
        )


class EventStoreError(UnoEventsError):
    """Root of the errors an event store raises."""

    code = "event_storage.error"


class WrongExpectedVersion(EventStoreError):
    """An append found the stream at another version than the caller expected."""

    code = "event_storage.wrong_expected_version"

    def __init__(self, stream_id: str, expected: object, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        state = "does not exist" if actual is None else f"is at version {actual}"
        super().__init__(
            f"Stream {stream_id!r} {state}, but the append expected {expected}. "
            "Nothing was written: reload the stream, decide again and retry."
        )


class DuplicateEventId(EventStoreError):
    """Some, not all, of an append's event ids are already stored.

    An append whose event ids are all stored in that stream is an idempotent
    retry and succeeds without writing; a partial overlap is a different append
    reusing ids, and is refused whole.
    """

    code = "event_storage.duplicate_event_id"

    def __init__(self, stream_id: str, event_ids: Sequence[object]) -> None:
        self.stream_id = stream_id
        self.event_ids = tuple(event_ids)
        shown = ", ".join(str(i) for i in self.event_ids[:5])
        more = f" and {len(self.event_ids) - 5} more" if len(self.event_ids) > 5 else ""
        super().__init__(
            f"Event ids {shown}{more} are already stored, so this append to {stream_id!r} is "
            "not a retry of the one that stored them. Nothing was written: retry an append "
            "with exactly the same events, or give new events new ids."
        )


class StreamDeleted(EventStoreError):
    """The stream was deleted: it can be neither read nor appended to."""

    code = "event_storage.stream_deleted"

    def __init__(self, stream_id: str, *, hard: bool) -> None:
        self.stream_id = stream_id
        self.hard = hard
        how = "erased (hard-deleted)" if hard else "deleted"
        super().__init__(
            f"Stream {stream_id!r} was {how}; its id cannot be reused. Use another stream id."
        )


class InvalidStreamId(EventStoreError, ValueError):
    """A stream id is empty, too long, or holds control characters."""

    code = "event_storage.invalid_stream_id"

    def __init__(self, stream_id: object, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason
        shown = repr(stream_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"Invalid stream id {shown}: {reason}. Use 1-{MAX_STREAM_ID_LENGTH} printable "
            "characters, such as 'account-42'."
        )


class InvalidArgument(EventStoreError, ValueError):
    """A store method got an argument of the wrong type, or one outside its range.

    ``parameter`` names it (``"after"``, ``"event_types[1]"``, ``"metadata"``),
    ``value`` is what was passed and ``expected`` what the store takes. Every
    store raises it before it reads or writes anything, with the same ranges:
    global positions, counts and limits are ``int`` from 0 to 2**63 - 1, stream
    versions ``int`` from 0 to 2**31 - 1, and ``bool`` is not an ``int`` here.
    """

    code = "event_storage.invalid_argument"

    def __init__(self, parameter: str, value: object, expected: str) -> None:
        self.parameter = parameter
        self.value = value
        self.expected = expected
        try:
            shown = repr(value)
        except RecursionError:  # pragma: no cover - repr guards its own cycles
            shown = f"<{type(value).__name__}>"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"Invalid {parameter}={shown} ({type(value).__name__}): it must be {expected}. "
            "Nothing was read or written; pass a value of that kind."
        )


class EventTooLarge(EventStoreError, ValueError):
    """An encoded event is larger than the store's configured limit."""

    code = "event_storage.event_too_large"

    def __init__(self, stream_id: str, event_type: str, size: int, limit: int) -> None:
        self.stream_id = stream_id
        self.event_type = event_type
        self.size = size
        self.limit = limit
        super().__init__(
            f"A {event_type!r} event for {stream_id!r} encodes to {size:,} bytes, over the "
            f"limit of {limit:,}. Nothing was written: store large payloads elsewhere and "
            "reference them, or raise max_event_size when opening the store."
        )


class TransactionOrderConflict(EventStoreError):
    """An append in a long transaction would sort before an event that committed first.

    It happens when a transaction wrote before appending, and another
    transaction appended to the same stream and committed in between.
    """

    code = "event_storage.transaction_order_conflict"

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(
            f"Another transaction appended to {stream_id!r} after this transaction began "
            "writing, so this append would break the stream's order in the global log. "
            "Nothing was written: retry the whole transaction, and make one append_streams "
            "call, covering every stream, its first write."
        )


class StoreUnavailable(EventStoreError):
    """The database cannot be reached, or dropped the connection."""

    code = "event_storage.unavailable"

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(
            f"The {backend} event store is unavailable: {reason}. The operation may not have "
            "run; retry when the database is back (appends with fixed event ids are safe to "
            "retry)."
        )
