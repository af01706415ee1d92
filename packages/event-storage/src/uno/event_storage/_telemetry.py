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
    """Spans and metrics for one backend.

    Without an OpenTelemetry SDK the spans are not recording: then no
    attributes are built and no context is attached, which keeps the cost of
    an append well under a microsecond.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._attributes = {"db.system.name": backend}

    @contextmanager
    def append(self, stream_id: str, events: int, streams: int = 1) -> Iterator[None]:
        """Trace and measure one append."""
        start = time.perf_counter()
        outcome = "ok"
        span = _tracer.start_span("append", kind=SpanKind.CLIENT)
        recording = span.is_recording()
        if recording:
            span.set_attributes(
                {
                    **self._attributes,
                    "db.operation.name": "append",
                    "uno.stream_id": stream_id,
                    "uno.events.count": events,
                    "uno.streams.count": streams,
                }
            )
        try:
            if recording:
                with trace.use_span(span, end_on_exit=False):
                    yield
            else:
                yield
        except BaseException as exc:
            outcome = getattr(exc, "code", type(exc).__name__)
            if recording:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, outcome))
            raise
        finally:
            span.end()
            _append_duration.record(
                time.perf_counter() - start, {**self._attributes, "outcome": outcome}
            )
            if outcome == "ok":
                _events_appended.add(events, self._attributes)

    @contextmanager
    def read(self, operation: str, stream_id: str | None) -> Iterator[None]:
        """Trace one read."""
        span = _tracer.start_span(operation, kind=SpanKind.CLIENT)
        if not span.is_recording():
            try:
                yield
            finally:
                span.end()
            return
        span.set_attributes({**self._attributes, "db.operation.name": operation})
        if stream_id is not None:
            span.set_attribute("uno.stream_id", stream_id)
        with trace.use_span(
            span, end_on_exit=True, record_exception=True, set_status_on_exception=True
        ):
            yield
