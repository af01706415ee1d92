"""Serializers: events and metadata to bytes and back, through the registry."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, ClassVar, NoReturn, Protocol, runtime_checkable

import msgspec

from uno.events._event import Event
from uno.events._metadata import EventMetadata
from uno.events._readback import compile_checked_encoder, first_unwritable
from uno.events._registry import EventRegistry
from uno.events._upcasting import Upcaster
from uno.events.exceptions import (
    EventDecodeError,
    EventEncodeError,
    UnknownEventType,
    UnregisteredEvent,
    UpcastError,
)

__all__ = ["JsonSerializer", "MsgPackSerializer", "Serializer"]

_Plan = Callable[[bytes], Event]
_FIELD_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


# msgspec reports invalid UTF-8 in a MessagePack string as UnicodeDecodeError.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)


@runtime_checkable
class Serializer(Protocol):
    """Turns events and their metadata into bytes and back.

    An implementer guarantees that ``decode(t, v, encode(e))`` equals ``e`` for
    every registered event ``e`` of type ``t`` and version ``v``; that decoding
    old versions applies the registered upcasters; and that it raises only the
    errors below, never a codec's own exception.

    ``encode`` refuses what ``decode`` could not read back (a value of another
    type than its field's, a NaN the format cannot hold), so a store never
    writes an event no reader can read.

    Raises (from its methods):
        UnregisteredEvent: ``encode`` got an event whose class is not registered.
        EventEncodeError: a value cannot be represented by the format, or would
            not decode back into its class (``field`` names it).
        UnknownEventType: ``decode`` got a type or version nothing handles.
        EventDecodeError: the bytes do not match the class they claim to be.
        UpcastError: an upcaster failed.
    """

    @property
    def content_type(self) -> str:
        """The media type of the encoded bytes, e.g. ``application/json``."""
        ...

    def encode(self, event: Event) -> bytes:
        """Return the bytes of ``event``'s data (not its type or version)."""
        ...

    def decode(self, event_type: str, event_version: int, data: bytes) -> Event:
        """Return the event from stored bytes of type ``event_type`` and ``event_version``.

        An upcaster chain that starts at ``event_version`` brings the event to the
        latest registered version; without one, the class registered for exactly
        that version is used.
        """
        ...

    def encode_metadata(self, metadata: EventMetadata) -> bytes:
        """Return the bytes of ``metadata``."""
        ...

    def decode_metadata(self, data: bytes) -> EventMetadata:
        """Return metadata from bytes made by ``encode_metadata``."""
        ...


class _MsgspecSerializer:
    """A serializer over one msgspec codec module; subclasses name the codec."""

    content_type: ClassVar[str]
    _codec: ClassVar[ModuleType]  # msgspec.json or msgspec.msgpack: same Encoder/Decoder API
    _finite_floats: ClassVar[bool]  # the format cannot hold NaN or infinity

    def __init__(self, registry: EventRegistry) -> None:
        self.registry = registry
        self._encode: Callable[[Any], bytes] = self._codec.Encoder().encode
        self._raw_decode: Callable[[bytes], Any] = self._codec.Decoder().decode
        self._registered = registry.identities
        self._typed: dict[type[Any], Callable[[bytes], Any]] = {}
        self._plans: dict[str, dict[int, _Plan]] = {}  # type name -> version -> plan
        self._encoders: dict[type[Any], Callable[[Any], bytes]] = {}  # class -> checked encode
        self._metadata_decode = self._typed_decoder(EventMetadata)
        registry.on_change(self._forget_plans)

    def _forget_plans(self) -> None:
        self._plans.clear()

    def encode(self, event: Event) -> bytes:
        """Return the bytes of ``event``'s data; its class must be registered.

        Raises:
            UnregisteredEvent: the event's class is not registered.
            EventEncodeError: a field holds a value the codec cannot encode, or
                one whose bytes would not decode back into the class (a value
                of another type, a NaN or infinity in JSON, a list inside itself).
        """
        try:
            return self._encoders[type(event)](event)
        except KeyError:
            if type(event) in self._encoders:  # not the lookup's
                raise
            encoder = self._checked_encoder(type(event))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise self._encode_error(event, exc) from exc
        try:
            return encoder(event)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise self._encode_error(event, exc) from exc

    def _checked_encoder(self, cls: type[Any]) -> Callable[[Any], bytes]:
        if cls not in self._registered:
            raise UnregisteredEvent(cls)
        encoder = self._encoders[cls] = compile_checked_encoder(
            cls, self._encode, self._check_reads_back, finite_floats=self._finite_floats
        )
        return encoder

    def _check_reads_back(self, event: Event, data: bytes) -> bytes:
        """Return ``data`` if it decodes into ``event``'s class, or raise ``EventEncodeError``."""
        cls = type(event)
        if self._finite_floats and b"null" in data:  # where JSON wrote a NaN, if it did
            found = first_unwritable(event, finite_floats=True)
            if found is not None:
                self._refuse(cls, found[1], found[0])
        try:
            self._typed_decoder(cls)(data)
        except _DECODE_ERRORS as exc:
            reason, field = _split_path(str(exc))
            self._refuse(cls, reason, field, exc)
        return data

    def _encode_error(self, event: Event, exc: Exception) -> EventEncodeError:
        field: str | None = None
        reason = str(exc)
        if isinstance(exc, RecursionError):
            found = first_unwritable(event, finite_floats=False)
            field, reason = found if found is not None else (None, "it is nested too deeply")
        event_type, version = self._registered[type(event)]
        return EventEncodeError(event_type, version, reason, field=field)

    def _refuse(
        self, cls: type[Any], reason: str, field: str | None, cause: Exception | None = None
    ) -> NoReturn:
        event_type, version = self._registered[cls]
        raise EventEncodeError(
            event_type, version, f"it would not decode back ({reason})", field=field
        ) from cause

    def decode(self, event_type: str, event_version: int, data: bytes) -> Event:
        """Return the event of the latest registered version, upcasting old data."""
        try:
            plan = self._plans[event_type][event_version]
        except KeyError:
            plan = self._plan(event_type, event_version)
            self._plans.setdefault(event_type, {})[event_version] = plan
        try:
            return plan(data)
        except _DECODE_ERRORS as exc:  # upcasting plans raise their own EventDecodeError
            raise _decode_error(event_type, event_version, exc) from exc

    def decode_rows(self, rows: Iterable[Sequence[Any]], column: int) -> list[Event]:
        """Return the events of stored rows, as ``decode`` would one by one.

        Each row holds the type name, the version and the data in ``column``,
        ``column + 1`` and ``column + 2``. This is the read path of a store: it
        looks a decode plan up once per run of rows of one type and version.

        Raises:
            UnknownEventType, EventDecodeError, UpcastError: as ``decode`` does,
                for the first row that has one; the error does not say which row
                (decode them one by one to find it).
        """
        plans = self._plans
        events: list[Event] = []
        append = events.append
        plan: _Plan
        event_type: str | None = None
        version: int | None = None
        try:
            for row in rows:
                if row[column] != event_type or row[column + 1] != version:
                    event_type, version = row[column], row[column + 1]
                    try:
                        plan = plans[event_type][version]
                    except KeyError:
                        plan = self._plan(event_type, version)
                        plans.setdefault(event_type, {})[version] = plan
                append(plan(row[column + 2]))
        except _DECODE_ERRORS as exc:  # upcasting plans raise their own EventDecodeError
            assert event_type is not None  # set before any plan runs
            assert version is not None
            raise _decode_error(event_type, version, exc) from exc
        return events

    def encode_metadata(self, metadata: EventMetadata) -> bytes:
        """Return the bytes of ``metadata``.

        Raises:
            EventEncodeError: a header or id holds a value the codec cannot encode.
        """
        try:
            return self._encode(metadata)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EventEncodeError("uno.EventMetadata", 1, str(exc)) from exc

    def decode_metadata(self, data: bytes) -> EventMetadata:
        """Return metadata from bytes made by ``encode_metadata``.

        Raises:
            EventDecodeError: the bytes are not valid metadata.
        """
        try:
            metadata: EventMetadata = self._metadata_decode(data)
        except _DECODE_ERRORS as exc:
            raise _decode_error("uno.EventMetadata", 1, exc) from exc
        return metadata

    def _typed_decoder(self, cls: type[Any]) -> Callable[[bytes], Any]:
        decoder = self._typed.get(cls)
        if decoder is None:
            decoder = self._typed[cls] = self._codec.Decoder(cls).decode
        return decoder

    def _plan(self, event_type: str, version: int) -> _Plan:
        """Build the decode function of one stored type and version."""
        chain = self.registry.chain(event_type, version)
        if chain is None:
            exact = self.registry.get(event_type, version)
            if exact is None:
                raise UnknownEventType(event_type, version, self.registry.versions(event_type))
            return self._typed_decoder(exact)
        latest = self.registry.latest(event_type)
        assert latest is not None  # a chain exists only for a registered type
        if not chain:
            return self._typed_decoder(latest)
        return self._upcasting_plan(event_type, version, chain, latest)

    def _upcasting_plan(
        self, event_type: str, version: int, chain: tuple[Upcaster, ...], latest: type[Event]
    ) -> _Plan:
        def plan(data: bytes) -> Event:
            value: Any = data
            current = version
            try:
                for link in chain:
                    value = self._as_input(value, link.source_class)
                    current = link.from_version
                    try:
                        value = link.upcast(value)
                    except Exception as exc:
                        raise UpcastError(
                            event_type, current, f"{type(exc).__name__}: {exc}"
                        ) from exc
                    current += 1
                result: Event = self._as_input(value, latest)
            except _DECODE_ERRORS as exc:
                raise _decode_error(event_type, current, exc) from exc
            return result

        return plan

    def _as_input(self, value: Any, cls: type[Event] | None) -> Any:
        """Bring ``value`` (bytes, mapping or event) to what the next step takes."""
        if isinstance(value, bytes):
            return self._raw_decode(value) if cls is None else self._typed_decoder(cls)(value)
        if cls is None:
            return msgspec.to_builtins(value) if isinstance(value, Event) else value
        if isinstance(value, cls):
            return value
        if isinstance(value, Event):
            value = msgspec.to_builtins(value)
        return msgspec.convert(value, cls, strict=False)


class JsonSerializer(_MsgspecSerializer):
    """Encode events as JSON with msgspec: readable in the database, portable."""

    content_type = "application/json"
    _codec: ClassVar[ModuleType] = msgspec.json
    _finite_floats: ClassVar[bool] = True


class MsgPackSerializer(_MsgspecSerializer):
    """Encode events as MessagePack with msgspec: compact and fastest.

    MessagePack holds integers from -2**63 to 2**64-1; larger ones raise
    ``EventEncodeError`` (use JSON, or a ``Decimal``, for them).
    """

    content_type = "application/msgpack"
    _codec: ClassVar[ModuleType] = msgspec.msgpack
    _finite_floats: ClassVar[bool] = False


def _split_path(message: str) -> tuple[str, str | None]:
    """Split a msgspec error message into its reason and the field path it names."""
    match = _FIELD_PATH.search(message)
    if match is None:
        return message, None
    return message[: match.start()], match.group(1) or None


def _decode_error(event_type: str, version: int, exc: Exception) -> EventDecodeError:
    reason, field = _split_path(str(exc))
    return EventDecodeError(event_type, version, reason, field=field)
