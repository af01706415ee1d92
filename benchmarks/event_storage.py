"""Event store: appending and reading events, uno vs eventsourcing vs hand-written SQL.

Contenders, on the same machine and database in one run:

* uno's ``PostgresEventStore`` and ``SQLiteEventStore``, opened with
  ``open_event_store`` and driven from one asyncio event loop;
* the ``eventsourcing`` library's ``PostgresApplicationRecorder`` and
  ``SQLiteApplicationRecorder``, called directly;
* hand-written psycopg 3 (blocking and async) and ``sqlite3`` code doing the
  same inserts and selects on a table with uno's columns and keys: the floor.

PostgreSQL comes from ``$UNO_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); everything is written into a
fresh schema that is dropped afterwards. Without a reachable server the
PostgreSQL half is skipped and says so.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol
from uuid import UUID, uuid4

import psycopg

from benchmarks._event_storage_common import (
    BATCH,
    BATCHES,
    CONCURRENT_BATCH,
    CONCURRENT_BATCHES,
    PAGE,
    SEED_STREAM_LENGTH,
    SEED_STREAMS,
    SINGLES,
    SINGLES_PER_STREAM,
    STREAM_READS,
    WRITERS,
    UnoContender,
    Workload,
)
from benchmarks._event_storage_postgres import (
    AsyncRawPostgres,
    EventsourcingPostgres,
    RawPostgres,
    analyze,
    fresh_schema,
    server_version,
)
from benchmarks._event_storage_sqlite import EventsourcingSQLite, RawSQLite, ThreadHandOff
from benchmarks._harness import Settings, Timing, compare, machine_facts, markdown_table, verdict

__all__ = ["run"]

POSTGRES_URL = os.environ.get("UNO_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SEEDED = SEED_STREAMS * SEED_STREAM_LENGTH
SHORT_REPEATS = 3  # times more timed runs for the scenarios whose runs are short and vary most

UNO_PG = "uno `PostgresEventStore`"
UNO_PG_ALONE = "uno `PostgresEventStore`, `group_commit=0`"
ES_PG = "eventsourcing `PostgresApplicationRecorder`"
PSYCOPG = "psycopg, blocking"
PSYCOPG_ASYNC = "psycopg, async"
UNO_LITE = "uno `SQLiteEventStore`"
ES_LITE = "eventsourcing `SQLiteApplicationRecorder`"
SQLITE3 = "sqlite3, hand-written"
HAND_OFF = "thread hand-off alone, no SQLite"

SINGLE = "Append 1 event"
BATCHED = f"Append {BATCH} events"
CONCURRENT = f"{WRITERS} writers x {CONCURRENT_BATCH} events"
READ_STREAM = f"Read a {SEED_STREAM_LENGTH:,}-event stream"
READ_ALL = f"Read all {SEEDED:,} events"


class _Appender(Protocol):
    """A contender of the sequential append scenarios."""

    def append_singles(self, count: int) -> None: ...
    def append_batches(self, count: int, size: int) -> None: ...


class _Writer(_Appender, Protocol):
    """A contender of every PostgreSQL append scenario."""

    def append_concurrently(self, writers: int, batches: int, size: int) -> None: ...


class _Reader(Protocol):
    """A contender of the read scenarios."""

    def read_stream(self, stream: UUID, times: int) -> int: ...
    def read_all(self) -> int: ...


class _PostgresContender(_Reader, _Writer, Protocol):
    """A contender of every PostgreSQL scenario."""


class _SingleAppender(Protocol):
    """A contender of the single-append scenario only."""

    def append_singles(self, count: int) -> None: ...


@dataclass(frozen=True)
class _Result:
    """The timings of one scenario's contenders; an operation is one append or one read."""

    scenario: str
    events_per_op: int
    timings: dict[str, Timing]

    def events_per_second(self, label: str) -> float:
        """Return the contender's events per second at its median."""
        return self.timings[label].per_second * self.events_per_op

    def throughput_ratio(self, label: str, *others: str) -> float:
        """Return ``label``'s events/s over the best of ``others``."""
        return self.events_per_second(label) / max(self.events_per_second(o) for o in others)

    def latency_ratio(self, label: str, *others: str) -> float:
        """Return ``label``'s median time over the best of ``others``."""
        return self.timings[label].median_ns / min(self.timings[o].median_ns for o in others)

    def fastest(self, *labels: str) -> str:
        """Return the fastest of ``labels``."""
        return min(labels, key=lambda label: self.timings[label].median_ns)


@dataclass(frozen=True)
class _Target:
    """One row of the comparison table."""

    comparison: str
    ratio: float
    at_least: float | None = None
    at_most: float | None = None

    def row(self) -> list[str]:
        """Return the ratio, the target and PASS or MISS (nothing without a target)."""
        if self.at_least is not None:
            target = f"≥ {self.at_least}x"
        elif self.at_most is not None:
            target = f"≤ {self.at_most}x"
        else:
            return [self.comparison, f"{self.ratio:.2f}x", "", ""]
        result = verdict(self.ratio, at_least=self.at_least, at_most=self.at_most)
        return [self.comparison, f"{self.ratio:.2f}x", target, result]


def run(settings: Settings) -> str:
    """Time every scenario on PostgreSQL and SQLite; return the markdown section."""
    workload = Workload.build()
    with asyncio.Runner() as runner:
        try:
            version = server_version(POSTGRES_URL)
        except psycopg.OperationalError as exc:
            print(f"  PostgreSQL is not reachable ({exc}); skipping it", flush=True)
            postgres, version = None, ""
        else:
            postgres = _postgres(runner, workload, settings)
        sqlite = _sqlite(runner, workload, settings)
    return _report(workload, settings, version, postgres, sqlite)


def _measure(
    scenario: str,
    cases: Mapping[str, Callable[[], object]],
    *,
    ops: int,
    events_per_op: int,
    settings: Settings,
    factor: int = 1,
) -> _Result:
    print(f"  {scenario}...", flush=True)
    timings = compare(cases, ops=ops, repeats=settings.repeats * factor)
    return _Result(scenario, events_per_op, {t.label: t for t in timings})


def _postgres(runner: asyncio.Runner, workload: Workload, settings: Settings) -> list[_Result]:
    with ExitStack() as stack:
        schema = stack.enter_context(fresh_schema(POSTGRES_URL))
        threads = stack.enter_context(ThreadPoolExecutor(WRITERS))
        uno = UnoContender(runner, workload, POSTGRES_URL, schema=schema, auto_migrate=True)
        stack.callback(uno.close)
        # The same store without group commit: every append its own transaction.
        uno_alone = UnoContender(runner, workload, POSTGRES_URL, schema=schema, group_commit=0)
        stack.callback(uno_alone.close)
        peer = EventsourcingPostgres(POSTGRES_URL, schema, workload, threads)
        stack.callback(peer.close)
        raw = RawPostgres(POSTGRES_URL, schema, workload, threads)
        stack.callback(raw.close)
        raw_async = AsyncRawPostgres(runner, POSTGRES_URL, schema, workload)
        stack.callback(raw_async.close)
        raw.create_table()

        print(f"  seeding {SEEDED:,} events for each reader...", flush=True)
        streams = [uuid4() for _ in range(SEED_STREAMS)]
        for seeded in (uno, peer, raw):
            seeded.seed(streams, SEED_STREAM_LENGTH)
        analyze(POSTGRES_URL, schema)
        contenders: dict[str, _PostgresContender] = {
            UNO_PG: uno,
            ES_PG: peer,
            PSYCOPG: raw,
            PSYCOPG_ASYNC: raw_async,
        }
        for label, reader in contenders.items():
            _check_reads(label, reader.read_stream(streams[0], 1), reader.read_all())

        measure = partial(_measure, settings=settings)
        return [
            measure(
                READ_STREAM,
                {
                    k: partial(r.read_stream, streams[0], STREAM_READS)
                    for k, r in contenders.items()
                },
                ops=STREAM_READS,
                events_per_op=SEED_STREAM_LENGTH,
            ),
            measure(
                READ_ALL,
                {k: r.read_all for k, r in contenders.items()},
                ops=1,
                events_per_op=SEEDED,
            ),
            measure(
                SINGLE,
                {k: partial(w.append_singles, SINGLES) for k, w in contenders.items()},
                ops=SINGLES,
                events_per_op=1,
            ),
            measure(
                BATCHED,
                {
                    **{k: partial(w.append_batches, BATCHES, BATCH) for k, w in contenders.items()},
                    f"{PSYCOPG}, COPY": partial(raw.append_copy, BATCHES, BATCH),
                    f"{PSYCOPG_ASYNC}, COPY": partial(raw_async.append_copy, BATCHES, BATCH),
                },
                ops=BATCHES,
                events_per_op=BATCH,
            ),
            measure(
                CONCURRENT,
                {
                    k: partial(w.append_concurrently, WRITERS, CONCURRENT_BATCHES, CONCURRENT_BATCH)
                    for k, w in {UNO_PG: uno, UNO_PG_ALONE: uno_alone, **contenders}.items()
                },
                ops=WRITERS * CONCURRENT_BATCHES,
                events_per_op=CONCURRENT_BATCH,
                factor=SHORT_REPEATS,
            ),
        ]


def _check_reads(label: str, stream_events: int, all_events: int) -> None:
    """Raise unless a reader sees the whole seeded stream and log."""
    if (stream_events, all_events) != (SEED_STREAM_LENGTH, SEEDED):
        raise RuntimeError(
            f"{label} read {stream_events:,} events of a stream and {all_events:,} of the log "
            f"after seeding; expected {SEED_STREAM_LENGTH:,} and {SEEDED:,}"
        )


def _sqlite(runner: asyncio.Runner, workload: Workload, settings: Settings) -> list[_Result]:
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uno-bench-")))
        uno = UnoContender(runner, workload, f"sqlite:///{directory / 'uno.db'}")
        stack.callback(uno.close)
        peer = EventsourcingSQLite(directory, workload)
        stack.callback(peer.close)
        raw = RawSQLite(directory, workload)
        stack.callback(raw.close)
        hand_off = ThreadHandOff(runner)
        stack.callback(hand_off.close)
        writers: dict[str, _Appender] = {UNO_LITE: uno, ES_LITE: peer, SQLITE3: raw}
        singles: dict[str, _SingleAppender] = {**writers, HAND_OFF: hand_off}
        results = [
            _measure(
                SINGLE,
                {k: partial(w.append_singles, SINGLES) for k, w in singles.items()},
                ops=SINGLES,
                events_per_op=1,
                settings=settings,
                factor=SHORT_REPEATS,
            ),
            _measure(
                BATCHED,
                {k: partial(w.append_batches, BATCHES, BATCH) for k, w in writers.items()},
                ops=BATCHES,
                events_per_op=BATCH,
                settings=settings,
            ),
        ]
        peer.check_durability()
        return results


def _postgres_targets(results: Sequence[_Result]) -> list[_Target]:
    by_name = {r.scenario: r for r in results}
    single, batched = by_name[SINGLE], by_name[BATCHED]
    concurrent = by_name[CONCURRENT]
    raw = (PSYCOPG, PSYCOPG_ASYNC)
    copy = (f"{PSYCOPG}, COPY", f"{PSYCOPG_ASYNC}, COPY")
    targets = [
        _Target(
            f"{SINGLE}: uno's latency / eventsourcing's",
            single.latency_ratio(UNO_PG, ES_PG),
            at_most=0.5,
        ),
        _Target(
            f"{SINGLE}: uno's latency / raw INSERT's ({single.fastest(*raw)})",
            single.latency_ratio(UNO_PG, *raw),
        ),
        _Target(
            f"{CONCURRENT}: uno's events/s / eventsourcing's",
            concurrent.throughput_ratio(UNO_PG, ES_PG),
            at_least=1.5,
        ),
        _Target(
            f"{CONCURRENT}: uno's events/s / raw unnest INSERT's ({concurrent.fastest(*raw)})",
            concurrent.throughput_ratio(UNO_PG, *raw),
            at_least=0.9,
        ),
        _Target(
            f"{CONCURRENT}: uno's events/s without group commit / raw unnest INSERT's",
            concurrent.throughput_ratio(UNO_PG_ALONE, *raw),
        ),
        _Target(
            f"{BATCHED}: uno's events/s / eventsourcing's",
            batched.throughput_ratio(UNO_PG, ES_PG),
            at_least=1.8,
        ),
        _Target(
            f"{BATCHED}: uno's events/s / raw unnest INSERT's ({batched.fastest(*raw)})",
            batched.throughput_ratio(UNO_PG, *raw),
        ),
        _Target(
            f"{BATCHED}: uno's events/s / raw COPY's ({batched.fastest(*copy)})",
            batched.throughput_ratio(UNO_PG, *copy),
        ),
    ]
    for scenario in (READ_STREAM, READ_ALL):
        reads = by_name[scenario]
        targets += [
            _Target(
                f"{scenario}: uno's events/s / eventsourcing's",
                reads.throughput_ratio(UNO_PG, ES_PG),
                at_least=1.2,
            ),
            _Target(
                f"{scenario}: uno's events/s / raw SELECT's ({reads.fastest(*raw)})",
                reads.throughput_ratio(UNO_PG, *raw),
                at_least=0.7,
            ),
        ]
    return targets


def _sqlite_targets(results: Sequence[_Result]) -> list[_Target]:
    by_name = {r.scenario: r for r in results}
    single, batched = by_name[SINGLE], by_name[BATCHED]
    return [
        _Target(
            f"{SINGLE}: uno's latency / eventsourcing's",
            single.latency_ratio(UNO_LITE, ES_LITE),
            at_most=0.75,
        ),
        _Target(
            f"{SINGLE}: uno's latency / raw sqlite3's", single.latency_ratio(UNO_LITE, SQLITE3)
        ),
        _Target(
            # The floor of any store with uno's keys: two B-trees (position, stream and
            # version) for events whose ids the store assigns, as eventsourcing's two.
            f"{SINGLE}: raw sqlite3's latency / eventsourcing's (the floor)",
            single.latency_ratio(SQLITE3, ES_LITE),
        ),
        _Target(
            f"{BATCHED}: uno's events/s / raw sqlite3's",
            batched.throughput_ratio(UNO_LITE, SQLITE3),
            at_least=0.9,
        ),
        _Target(
            f"{BATCHED}: uno's events/s / eventsourcing's",
            batched.throughput_ratio(UNO_LITE, ES_LITE),
        ),
    ]


def _duration(ns: float) -> str:
    return f"{ns / 1e6:,.1f} ms" if ns >= 10_000_000 else f"{ns / 1000:,.1f} µs"


def _results_table(results: Sequence[_Result]) -> str:
    rows = []
    for result in results:
        for n, (label, timing) in enumerate(result.timings.items()):
            rows.append(
                [
                    result.scenario if n == 0 else "",
                    label,
                    _duration(timing.median_ns),
                    f"{_duration(timing.min_ns)} - {_duration(timing.max_ns)}",
                    f"{result.events_per_second(label):,.0f}",
                ]
            )
    return markdown_table(
        ["Scenario", "Contender", "per operation (median)", "min - max", "events/s"],
        rows,
        align="llrrr",
    )


def _targets_table(targets: Sequence[_Target]) -> str:
    return markdown_table(
        ["Comparison", "Ratio", "Target", "Result"], [t.row() for t in targets], align="lrrl"
    )


def _report(
    workload: Workload,
    settings: Settings,
    postgres_version: str,
    postgres: list[_Result] | None,
    sqlite: list[_Result],
) -> str:
    if postgres is None:
        postgres_part = f"PostgreSQL was not reachable at `{POSTGRES_URL}`: not measured."
    else:
        postgres_part = (
            f"PostgreSQL {postgres_version} on the same machine, `synchronous_commit=on` "
            f"(the default) for everyone.\n\n{_results_table(postgres)}\n\n"
            f"{_targets_table(_postgres_targets(postgres))}"
        )
    facts = machine_facts(("uno-event-storage", "eventsourcing", "psycopg", "psycopg-pool"))
    return f"""\
## Event store

What is measured: appending events to streams and reading them back through
uno's event store, through the `eventsourcing` library's recorders, and
through hand-written SQL doing the same inserts and selects (the floor). Every
event is a small JSON document such as `{workload.payloads[0].decode()}`
({workload.mean_payload_size():.0f} bytes on average).

- **uno** gets real `Event` objects: its time includes making each event's id
  (a UUIDv7), validating and encoding the event, checking the expected version
  and, when reading, decoding every event into an `Event` inside a
  `RecordedEvent`. Appends expect the stream's exact version. Stores are opened
  with `open_event_store` and driven from one asyncio event loop; concurrent
  writers are tasks. The PostgreSQL store keeps the global order without
  locking the table and sends `NOTIFY` after commits from a background task;
  with 2 appends under way, those that arrive meanwhile wait and then share
  one transaction (group commit); the raw code gives every append a
  transaction of its own. These are its defaults, as is its pool: one
  connection at first, growing to 10 on demand.
- **eventsourcing** recorders get `StoredEvent`s whose state is the JSON,
  encoded before timing, and return `StoredEvent`s and `Notification`s holding
  the bytes, undecoded. Their defaults are kept: the PostgreSQL recorder locks
  the table (`LOCK TABLE ... IN EXCLUSIVE MODE`) in every insert so that
  notification ids follow commit order, and sends `NOTIFY` inside the
  transaction. Only its pool may grow from one connection to {WRITERS}
  (`max_overflow`), for the concurrent writers (threads).
- **hand-written** code writes a table with uno's columns and keys (primary
  key on the position, unique stream and version, unique event id), with the
  position from an identity column (SQLite: the rowid) and a fresh UUIDv7 per
  event, and returns rows as tuples, undecoded. psycopg 3 runs blocking
  (threads for concurrent writers) and async (tasks), one connection per
  writer; the ratios use the faster of the two, named in brackets. Batches are
  `INSERT ... SELECT FROM unnest(...)` of arrays sent as binary parameters, or
  binary `COPY`; SQLite uses `executemany` inside `BEGIN IMMEDIATE` ... `COMMIT`.

Scenarios: "{SINGLE}" is {SINGLES:,} appends of one event, one after another,
to streams of {SINGLES_PER_STREAM} events; "{BATCHED}" is {BATCHES} appends of
{BATCH} events, each to a new stream; "{CONCURRENT}" is {WRITERS} writers at
once, each appending {CONCURRENT_BATCHES} batches of {CONCURRENT_BATCH} events
to a stream of its own. The reads run over {SEED_STREAMS} streams of
{SEED_STREAM_LENGTH:,} events written before timing (then `ANALYZE`d, as
autovacuum would soon do): one stream read whole {STREAM_READS} times, and the
whole log read from the start in pages of {PAGE:,} events (uno's default
batch). Each case runs once to warm up, then {settings.repeats} timed runs
({settings.repeats * SHORT_REPEATS} for "{CONCURRENT}" and SQLite's "{SINGLE}", whose
runs are short and vary most) taking turns with the other contenders of its
scenario; the tables give the median run per operation (one append, or one read) and the fastest and
slowest. Ratios compare medians: events per second for throughput, time per
append for latency.

{facts} SQLite {sqlite3.sqlite_version}.

### PostgreSQL

{postgres_part}

### SQLite

One database file per contender in a temporary directory, in WAL mode with
`synchronous=NORMAL` for everyone: uno's default, set by hand on the raw
connection and on eventsourcing's (whose default is `FULL`). uno's store runs
an append of up to 128 events on the event loop when nothing can make it wait
(no fsync, no lock wait: see the event store guide), and otherwise on its
writer thread, which costs a hand-off there and back; the "{HAND_OFF}" row
times just that round trip, which depends on the machine's load: on this
2-core virtual machine about 15 µs while the other core is busy, and up to
about 90 µs while it sleeps and must be woken.

A single append's cost is mostly system calls: each commit writes one WAL
frame per B-tree it touches (two `pwrite`s each) and takes and drops about
six file locks. uno's table has three B-trees: the position, the stream and
version, and a unique index of the event ids that callers chose, which makes a
retried append a no-op. The events appended here have no ids of the caller's:
the store assigns them, derived from the position, so the index is not written
and a commit touches two B-trees, as eventsourcing's (which has no event ids).
The hand-written `sqlite3` row, with uno's keys and no Python around it, is the
floor for any store that keeps uno's contract; the "(the floor)" ratio shows how
far below eventsourcing that floor lies on this machine.

Checkpoints are part of every time. The raw and eventsourcing connections
checkpoint inside a commit every 1,000 WAL pages (SQLite's default), a few
times in every run (a few milliseconds each on this machine). uno's store
checkpoints on a thread of its own after about 8,192 pages, about every 2,700
single appends: most runs of {SINGLES:,} include one. It copies and syncs
while the loop goes on appending; only its last millisecond or so, which
copies what was appended meanwhile and starts the WAL over, holds the
writer, and one append waits for it. The syncs' disk writes still slow the
loop's appends a little while they run; the fastest runs are those without.

{_results_table(sqlite)}

{_targets_table(_sqlite_targets(sqlite))}
"""  # noqa: S608 - prose about SQL, not a query
