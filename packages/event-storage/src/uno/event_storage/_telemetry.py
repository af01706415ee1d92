"""OpenTelemetry spans and metrics of a store, through the API only.

Spans follow the database conventions (``db.system.name``,
``db.operation.name``); metrics are ``uno.event_storage.append.duration``
(seconds) and ``uno.event_storage.events.appended``. Event data never goes
into telemetry; stream ids go into span attributes, never metric attributes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import (
    OTEL_PYTHON_METER_PROVIDER,
    OTEL_PYTHON_TRACER_PROVIDER,
)
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

__all__ = ["StoreTelemetry"]

_tracer = trace.get_tracer("uno.event_storage")
_meter = metrics.get_meter("uno.event_storage")
_append_duration = _meter.create_histogram(
    "uno.event_storage.append.duration", unit="s", description="Duration of event store appends"
)
_events_appended = _meter.create_counter(
    "uno.event_storage.events.appended", unit="{event}", description="Events appended"
)

_IDLE_PROVIDERS = (ProxyTracerProvider, NoOpTracerProvider, _ProxyMeterProvider, NoOpMeterProvider)
_sdk_seen = False
# Where the API keeps the providers installed by set_tracer_provider and
# set_meter_provider; None until then. Private to the API, so only trusted
# when both exist and no environment variable names a provider (the API loads
# that one on first use).
_trace_globals: Any = trace
_metrics_globals: Any = metrics_internal
_GLOBALS_KNOWN = (
    hasattr(_trace_globals, "_TRACER_PROVIDER")
    and hasattr(_metrics_globals, "_METER_PROVIDER")
    and OTEL_PYTHON_TRACER_PROVIDER not in os.environ
    and OTEL_PYTHON_METER_PROVIDER not in os.environ
)


def active() -> bool:
    """Tell whether an OpenTelemetry SDK may record this process's spans or metrics.

    Until someone installs a tracer or meter provider, the API's global
    providers are proxies that record nothing: an append then skips telemetry
    altogether. A provider can be installed once only, so the first ``True``
    is kept.
    """
    global _sdk_seen  # noqa: PLW0603 - a one-way latch
    if _sdk_seen:
        return True
    if (
        _GLOBALS_KNOWN
        and _trace_globals._TRACER_PROVIDER is None
        and _metrics_globals._METER_PROVIDER is None
    ):
        return False  # nothing installed: the cheap answer
    if isinstance(trace.get_tracer_provider(), _IDLE_PROVIDERS) and isinstance(
        metrics.get_meter_provider(), _IDLE_PROVIDERS
    ):
        return False  # providers that record nothing: look again next time
    _sdk_seen = True
    return True


class StoreTelemetry:
    """Spans and metrics for one backend.

    Without an OpenTelemetry SDK (``active()`` is false) the store skips
    ``append`` altogether; with one whose spans are not recording, no
    attributes are built and no context is attached.
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
