"""OpenTelemetry spans and metrics of a store, through the API only.

Spans follow the database conventions (``db.system.name``,
``db.operation.name``); metrics are ``uno.event_storage.append.duration``
(seconds) and ``uno.event_storage.events.appended``. Event data never goes
into telemetry; stream ids go into span attributes, never metric attributes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["StoreTelemetry"]

_tracer = trace.get_tracer("uno.event_storage")
_meter = metrics.get_meter("uno.event_storage")
_append_duration = _meter.create_histogram(
    "uno.event_storage.append.duration", unit="s", description="Duration of event store appends"
)
_events_appended = _meter.create_counter(
    "uno.event_storage.events.appended", unit="{event}", description="Events appended"
)


class StoreTelemetry:
    """Spans and metrics for one backend."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._attributes = {"db.system.name": backend}

    @contextmanager
    def append(self, stream_id: str, events: int, streams: int = 1) -> Iterator[None]:
        """Trace and measure one append."""
        start = time.perf_counter()
        outcome = "ok"
        with _tracer.start_as_current_span(
            "append",
            kind=SpanKind.CLIENT,
            attributes={
                **self._attributes,
                "db.operation.name": "append",
                "uno.stream_id": stream_id,
                "uno.events.count": events,
                "uno.streams.count": streams,
            },
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                yield
            except BaseException as exc:
                outcome = getattr(exc, "code", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, outcome))
                raise
            finally:
                labels = {**self._attributes, "outcome": outcome}
                _append_duration.record(time.perf_counter() - start, labels)
                if outcome == "ok":
                    _events_appended.add(events, self._attributes)

    @contextmanager
    def read(self, operation: str, stream_id: str | None) -> Iterator[None]:
        """Trace one read."""
        attributes: dict[str, str] = {**self._attributes, "db.operation.name": operation}
        if stream_id is not None:
            attributes["uno.stream_id"] = stream_id
        with _tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
            yield
