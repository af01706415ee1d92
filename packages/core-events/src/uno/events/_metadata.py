"""What travels with an event: caller metadata and the store's envelope."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Generic, TypeVar
from uuid import UUID

import msgspec

from uno.events._event import Event

__all__ = ["EventMetadata", "RecordedEvent"]

E_co = TypeVar("E_co", bound=Event, covariant=True)

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
Traceparent = Annotated[str, msgspec.Meta(pattern=f"^{_TRACEPARENT.pattern}$")]


_TEXT_FIELDS = ("correlation_id", "causation_id", "tenant_id", "actor", "tracestate")


class EventMetadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Context recorded with an event, apart from its domain data.

    Attributes:
        correlation_id: Shared by every message of one business flow.
        causation_id: Id of the command or event that caused this one.
        tenant_id: The tenant the event belongs to, in multi-tenant services.
        actor: Who acted (a user or service id). Never a secret.
        traceparent: W3C trace context of the writer, so consumers continue its trace.
        tracestate: W3C vendor trace state that goes with ``traceparent``.
        headers: Free-form string headers.

    Values are checked when metadata is built and when it is decoded (strings
    where strings belong, a W3C ``traceparent``), so metadata that could not be
    read back is never stored.

    Raises:
        ValueError: a value has the wrong type or shape.
    """

    correlation_id: str | None = None
    causation_id: str | None = None
    tenant_id: str | None = None
    actor: str | None = None
    traceparent: Traceparent | None = None
    tracestate: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Empty metadata, the most common kind, needs no checks: it is built for
        # every event appended without metadata.
        if (
            self.correlation_id is None
            and self.causation_id is None
            and self.tenant_id is None
            and self.actor is None
            and self.traceparent is None
            and self.tracestate is None
            and type(self.headers) is dict
            and not self.headers
        ):
            return
        self._check()

    def _check(self) -> None:
        # Values may come from anywhere (headers of an HTTP request...): check them all.
        for name in _TEXT_FIELDS:
            value: object = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"EventMetadata.{name} must be a str, got {type(value).__name__}")
        traceparent: object = self.traceparent
        if traceparent is not None and not (
            isinstance(traceparent, str) and _TRACEPARENT.fullmatch(traceparent)
        ):
            raise ValueError(
                f"EventMetadata.traceparent {traceparent!r} is not W3C trace context "
                "(version-traceid-parentid-flags in lowercase hex)"
            )
        headers: object = self.headers
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("EventMetadata.headers must map str to str")

    @classmethod
    def caused_by(cls, event: RecordedEvent[Event]) -> EventMetadata:
        """Return metadata for a message caused by ``event``.

        The correlation id carries over (or starts at the cause's event id), the
        causation id becomes the cause's event id; tenant, actor and trace
        context carry over; headers do not.
        """
        cause = event.metadata
        return cls(
            correlation_id=cause.correlation_id or str(event.event_id),
            causation_id=str(event.event_id),
            tenant_id=cause.tenant_id,
            actor=cause.actor,
            traceparent=cause.traceparent,
            tracestate=cause.tracestate,
        )


class RecordedEvent(msgspec.Struct, Generic[E_co], frozen=True, kw_only=True):
    """An event as the store holds it: the domain event plus what the store added.

    Attributes:
        event_id: UUIDv7 chosen by the writer; appending it again is a no-op.
        stream_id: The stream the event belongs to.
        stream_version: Its position within the stream, starting at 1.
        global_position: Its position in the store's global log, starting at 1.
        recorded_at: When the store committed it (timezone-aware, UTC).
        event_type: Stable type name of ``data``.
        event_version: Schema version of ``data`` (after any upcasting).
        data: The domain event.
        metadata: Correlation, causation, tenant, actor, trace context, headers.
    """

    event_id: UUID
    stream_id: str
    stream_version: int
    global_position: int
    recorded_at: datetime
    event_type: str
    event_version: int
    data: E_co
    metadata: EventMetadata = msgspec.field(default_factory=EventMetadata)
