"""What the event store benchmark writes and reads, and uno's side of it on any backend."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from uno.event_storage import ClosableEventStore, open_event_store
from uno.events import NO_STREAM, Event, EventRegistry, JsonSerializer

__all__ = [
    "BATCH",
    "BATCHES",
    "CONCURRENT_BATCH",
    "CONCURRENT_BATCHES",
    "EVENTSOURCING_TOPIC",
    "PAGE",
    "SEED_STREAMS",
    "SEED_STREAM_LENGTH",
    "SINGLES",
    "SINGLES_PER_STREAM",
    "STREAM_READS",
    "WRITERS",
    "ItemAdded",
    "UnoContender",
    "Workload",
    "single_appends",
]

SINGLES = 2_000
"""Single-event appends per timed run."""
SINGLES_PER_STREAM = 10
"""Single appends go to streams of this many events, so most append to an existing stream."""
BATCH, BATCHES = 100, 200
"""Events per batch append, and batch appends per timed run (each to a new stream)."""
WRITERS, CONCURRENT_BATCHES, CONCURRENT_BATCH = 8, 100, 10
"""Concurrent writers, the batches each appends per timed run, and the events per batch."""
SEED_STREAMS, SEED_STREAM_LENGTH = 100, 1_000
"""The read benchmarks' log: this many streams of this many events."""
STREAM_READS = 100
"""Reads of one seeded stream per timed run."""
PAGE = 1_000
"""Events fetched per query when reading the whole log (uno's default batch size)."""
EVENTSOURCING_TOPIC = "benchmarks._event_storage_common:ItemAdded"
"""The topic eventsourcing stores with each event: its name for the event class."""
_DISTINCT = 1_000  # distinct events in the workload, reused round-robin


class ItemAdded(Event):
    """The benchmark's event: about 100 bytes of JSON."""

    event_type = "bench.ItemAdded"

    cart_id: UUID
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class Workload:
    """The events appended, as uno events and as the JSON bytes the others store."""

    registry: EventRegistry
    events: tuple[ItemAdded, ...]
    payloads: tuple[bytes, ...]
    """``payloads[i]`` is ``events[i]`` encoded by uno's ``JsonSerializer``."""

    @classmethod
    def build(cls) -> Workload:
        """Return the same varied events on every run."""
        rng = random.Random(20_251_122)
        events = tuple(
            ItemAdded(
                cart_id=UUID(int=rng.getrandbits(128), version=4),
                sku=f"SKU-{rng.randrange(10**8):08d}",
                quantity=rng.randrange(1, 10),
                unit_price_cents=rng.randrange(100, 100_000),
            )
            for _ in range(_DISTINCT)
        )
        registry = EventRegistry()
        registry.register(ItemAdded)
        serializer = JsonSerializer(registry)
        return cls(registry, events, tuple(serializer.encode(event) for event in events))

    def mean_payload_size(self) -> float:
        """Return the mean length of the stored JSON, in bytes."""
        return sum(map(len, self.payloads)) / len(self.payloads)


def single_appends(count: int) -> Iterator[tuple[UUID, int]]:
    """Yield ``(stream, version)`` for ``count`` single-event appends.

    A new stream (a random UUID) starts every ``SINGLES_PER_STREAM`` appends;
    versions count from 1 within it.
    """
    stream = uuid4()
    for n in range(count):
        version = n % SINGLES_PER_STREAM + 1
        if version == 1 and n:
            stream = uuid4()
        yield stream, version


class UnoContender:
    """A uno store opened with ``open_event_store``, driven through a blocking facade.

    Every method runs its whole workload on the runner's event loop and returns
    when it is done, so that the harness can time it like the blocking peers.
    Appends pass uno ``Event`` objects: encoding them is part of uno's time.
    """

    def __init__(
        self, runner: asyncio.Runner, workload: Workload, url: str, **options: Any
    ) -> None:
        self._runner = runner
        self._events = workload.events
        self._exit = AsyncExitStack()
        self._store: ClosableEventStore = runner.run(
            self._exit.enter_async_context(
                open_event_store(url, registry=workload.registry, **options)
            )
        )

    def close(self) -> None:
        """Close the store."""
        self._runner.run(self._exit.aclose())

    def seed(self, streams: Sequence[UUID], length: int) -> None:
        """Append ``length`` events to each new stream, one append per stream."""
        self._runner.run(self._seed(streams, length))

    def append_singles(self, count: int) -> None:
        """Make ``count`` single-event appends, each expecting the stream's current version."""
        self._runner.run(self._singles(count))

    def append_batches(self, count: int, size: int) -> None:
        """Append ``count`` batches of ``size`` events, each to a new stream."""
        self._runner.run(self._batches(count, size))

    def append_concurrently(self, writers: int, batches: int, size: int) -> None:
        """Run ``writers`` tasks at once, each appending ``batches`` batches to its own stream."""
        self._runner.run(self._concurrently(writers, batches, size))

    def read_stream(self, stream: UUID, times: int) -> int:
        """Read the whole stream ``times`` times; return the events read."""
        return self._runner.run(self._read_stream(str(stream), times))

    def read_all(self) -> int:
        """Read the global log from the start, ``PAGE`` events a query; return the events read."""
        return self._runner.run(self._read_all())

    async def _seed(self, streams: Sequence[UUID], length: int) -> None:
        events = [self._events[i % len(self._events)] for i in range(length)]
        for stream in streams:
            await self._store.append(str(stream), events, expected_version=NO_STREAM)

    async def _singles(self, count: int) -> None:
        append, events = self._store.append, self._events
        for n, (stream, version) in enumerate(single_appends(count)):
            await append(str(stream), [events[n % len(events)]], expected_version=version - 1)

    async def _batches(self, count: int, size: int) -> None:
        append, batch = self._store.append, self._events[:size]
        for _ in range(count):
            await append(str(uuid4()), batch, expected_version=NO_STREAM)

    async def _concurrently(self, writers: int, batches: int, size: int) -> None:
        append, batch = self._store.append, self._events[:size]

        async def writer() -> None:
            stream = str(uuid4())
            for n in range(batches):
                await append(stream, batch, expected_version=n * size)

        await asyncio.gather(*(writer() for _ in range(writers)))

    async def _read_stream(self, stream: str, times: int) -> int:
        return sum([len(await self._store.read_stream(stream)) for _ in range(times)])

    async def _read_all(self) -> int:
        count = 0
        async for _ in self._store.read_all(batch_size=PAGE):
            count += 1
        return count
