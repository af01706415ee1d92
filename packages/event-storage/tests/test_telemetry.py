"""Appends and reads emit OpenTelemetry spans and metrics, and never event data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from uno.event_storage import InMemoryEventStore, _telemetry
from uno.event_storage.testing import MoneyDeposited, contract_registry
from uno.events import NO_STREAM, WrongExpectedVersion

_spans = InMemorySpanExporter()
_metrics = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    """Install the SDK once per process: OpenTelemetry allows one provider of each kind."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[_metrics]))


@pytest.fixture(autouse=True)
def fresh_spans() -> Iterator[None]:
    _spans.clear()
    yield
    _spans.clear()


def appended_total() -> int:
    data = _metrics.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "uno.event_storage.events.appended":
                    assert isinstance(metric.data, Sum)
                    total += sum(int(point.value) for point in metric.data.data_points)
    return total


@pytest.mark.anyio
async def test_append_and_reads_are_traced_with_database_attributes() -> None:
    store = InMemoryEventStore(contract_registry())
    before = appended_total()
    await store.append("account-1", [MoneyDeposited(amount=5, note="secret")])
    await store.read_stream("account-1")
    [e async for e in store.read_all()]
    spans = {span.name: span for span in _spans.get_finished_spans()}
    assert set(spans) == {"append", "read_stream", "read_all"}
    append = spans["append"].attributes or {}
    assert append["db.system.name"] == "memory"
    assert append["db.operation.name"] == "append"
    assert append["uno.stream_id"] == "account-1"
    assert append["uno.events.count"] == 1
    assert all(
        "secret" not in str(value)
        for s in spans.values()
        for value in (s.attributes or {}).values()
    )
    assert appended_total() == before + 1


@pytest.mark.anyio
async def test_a_failed_append_is_an_error_span_with_the_error_code() -> None:
    store = InMemoryEventStore(contract_registry())
    await store.append("s", [MoneyDeposited(amount=1)])
    before = appended_total()
    with pytest.raises(WrongExpectedVersion):
        await store.append("s", [MoneyDeposited(amount=2)], expected_version=NO_STREAM)
    (span,) = [s for s in _spans.get_finished_spans() if s.status.status_code is StatusCode.ERROR]
    assert span.status.description == "event_storage.wrong_expected_version"
    assert any(event.name == "exception" for event in span.events)
    assert appended_total() == before


def test_telemetry_is_active_once_an_sdk_is_installed() -> None:
    assert _telemetry.active()


def test_without_an_sdk_appends_skip_telemetry_and_still_work() -> None:
    script = (
        "import asyncio\n"
        "from uno.event_storage import InMemoryEventStore, _telemetry\n"
        "from uno.event_storage.testing import MoneyDeposited, contract_registry\n"
        "assert not _telemetry.active()\n"
        "store = InMemoryEventStore(contract_registry())\n"
        "result = asyncio.run(store.append('s', [MoneyDeposited(amount=1)]))\n"
        "assert result.stream_version == 1\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "assert _telemetry.active()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], check=True, env=env, timeout=60
    )
