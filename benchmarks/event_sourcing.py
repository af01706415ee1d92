"""Event sourcing: aggregates saved and loaded, and a projection catching up, uno vs eventsourcing.

Contenders, on the same machine and database in one run:

* uno's ``Repository`` over ``Aggregate`` subclasses and its ``ProjectionRunner``,
  on stores opened with ``open_event_store`` and driven from one asyncio event
  loop;
* the ``eventsourcing`` library's ``Application`` over its ``Aggregate``
  subclasses, and its ``ProjectionRunner`` (PostgreSQL only: its SQLite
  recorder cannot subscribe, so on SQLite its events are pulled by hand);
* uno's event store alone, without aggregates or runner: the floor uno's own
  layers stand on.

PostgreSQL comes from ``$UNO_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each library writes into a
fresh schema of its own, dropped afterwards. Without a reachable server the
PostgreSQL half is skipped and says so.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import psycopg
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.conninfo import conninfo_to_dict

from benchmarks._event_sourcing_contenders import PAGE, PeerContender, UnoContender
from benchmarks._event_sourcing_model import items
from benchmarks._event_storage_postgres import analyze, fresh_schema, server_version
from benchmarks._harness import Settings, Timing, compare, machine_facts, markdown_table, verdict
from benchmarks.event_storage import POSTGRES_URL

__all__ = ["run"]

LENGTHS = (10, 100, 1_000)
"""Events per aggregate in the save and load scenarios."""
SAVES = {10: 200, 100: 40, 1_000: 4}
"""New aggregates saved per timed run, by length."""
LOADS = {10: 200, 100: 60, 1_000: 6}
"""Aggregates loaded per timed run, by length (round-robin over ``LOADED``)."""
LOADED = 20
"""Aggregates of each length stored before the load scenarios."""
CATCH_UP_CARTS, CATCH_UP_LENGTH = 1_000, 100
"""The catch-up log: this many carts of this many events each."""
CATCH_UP_EVENTS = CATCH_UP_CARTS * CATCH_UP_LENGTH
TARGET_SAVE_LOAD, TARGET_CATCH_UP = 2.0, 1.5
"""uno's speed over eventsourcing's, at least."""

UNO = "uno"
PEER = "eventsourcing"
UNO_STORE = "uno event store alone"
PEER_PULL = "eventsourcing, pulled by hand"
CATCH_UP = f"Catch up over {CATCH_UP_EVENTS:,} events"


def _save(length: int) -> str:
    return f"Save a new aggregate of {length:,} events"


def _load(length: int) -> str:
    return f"Load an aggregate of {length:,} events"


@dataclass(frozen=True)
class _Result:
    """The timings of one scenario's contenders; an operation is one save, load or catch-up."""

    scenario: str
    events_per_op: int
    timings: dict[str, Timing]

    def speedup(self, label: str, other: str) -> float:
        """Return how many times faster ``label`` is than ``other``, at their medians."""
        return self.timings[other].median_ns / self.timings[label].median_ns


@dataclass(frozen=True)
class _Target:
    """One row of the comparison table."""

    comparison: str
    ratio: float
    at_least: float | None = None

    def row(self) -> list[str]:
        """Return the ratio, the target and PASS or MISS (nothing without a target)."""
        if self.at_least is None:
            return [self.comparison, f"{self.ratio:.2f}x", "", ""]
        result = verdict(self.ratio, at_least=self.at_least)
        return [self.comparison, f"{self.ratio:.2f}x", f"≥ {self.at_least}x", result]


def run(settings: Settings) -> str:
    """Time every scenario on PostgreSQL and SQLite; return the markdown section."""
    with asyncio.Runner() as runner:
        try:
            version = server_version(POSTGRES_URL)
        except psycopg.OperationalError as exc:
            print(f"  PostgreSQL is not reachable ({exc}); skipping it", flush=True)
            postgres, version = None, ""
        else:
            postgres = _postgres(runner, settings)
        sqlite = _sqlite(runner, settings)
    return _report(settings, version, postgres, sqlite)


def _measure(
    scenario: str,
    cases: Mapping[str, Callable[[], object]],
    *,
    ops: int,
    events_per_op: int,
    settings: Settings,
) -> _Result:
    print(f"  {scenario}...", flush=True)
    timings = compare(cases, ops=ops, repeats=settings.repeats)
    return _Result(scenario, events_per_op, {t.label: t for t in timings})


def _postgres(runner: asyncio.Runner, settings: Settings) -> list[_Result]:
    params = conninfo_to_dict(POSTGRES_URL)
    with ExitStack() as stack:
        uno_schema = stack.enter_context(fresh_schema(POSTGRES_URL))
        peer_schema = stack.enter_context(fresh_schema(POSTGRES_URL))
        uno = UnoContender(
            runner, POSTGRES_URL, items(CATCH_UP_LENGTH), schema=uno_schema, auto_migrate=True
        )
        stack.callback(uno.close)
        peer = PeerContender(
            {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": str(params.get("dbname", "postgres")),
                "POSTGRES_HOST": str(params.get("host", "localhost")),
                "POSTGRES_PORT": str(params.get("port", "5432")),
                "POSTGRES_USER": str(params.get("user", "postgres")),
                "POSTGRES_PASSWORD": str(params.get("password", "")),
                "POSTGRES_SCHEMA": peer_schema,
            },
            items(CATCH_UP_LENGTH),
        )
        stack.callback(peer.close)
        _seed_catch_up(uno, peer)
        for schema in (uno_schema, peer_schema):
            analyze(POSTGRES_URL, schema)
        catch_up = _measure(
            CATCH_UP,
            {UNO: uno.catch_up, PEER: peer.catch_up, UNO_STORE: uno.read_all_and_apply},
            ops=1,
            events_per_op=CATCH_UP_EVENTS,
            settings=settings,
        )
        return [catch_up, *_aggregates(uno, peer, settings)]


def _sqlite(runner: asyncio.Runner, settings: Settings) -> list[_Result]:
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uno-bench-")))
        uno = UnoContender(runner, f"sqlite:///{directory / 'uno.db'}", items(CATCH_UP_LENGTH))
        stack.callback(uno.close)
        peer = PeerContender(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(directory / "es.db"),
            },
            items(CATCH_UP_LENGTH),
        )
        stack.callback(peer.close)
        recorder = cast(SQLiteApplicationRecorder, peer.app.recorder)
        with recorder.datastore.get_connection(commit=True) as conn:
            conn.cursor().execute("PRAGMA synchronous=NORMAL")
        _seed_catch_up(uno, peer)
        catch_up = _measure(
            CATCH_UP,
            {UNO: uno.catch_up, PEER_PULL: peer.pull_and_apply, UNO_STORE: uno.read_all_and_apply},
            ops=1,
            events_per_op=CATCH_UP_EVENTS,
            settings=settings,
        )
        results = [catch_up, *_aggregates(uno, peer, settings)]
        _check_sqlite_durability(recorder)
        return results


def _seed_catch_up(uno: UnoContender, peer: PeerContender) -> None:
    """Store the catch-up log on both sides and check that both projections see all of it."""
    print(f"  seeding {CATCH_UP_EVENTS:,} events on each side...", flush=True)
    uno.save_new(CATCH_UP_CARTS, CATCH_UP_LENGTH)
    peer.save_new(CATCH_UP_CARTS, CATCH_UP_LENGTH)
    totals = [
        sorted(uno.catch_up().values()),
        sorted(uno.read_all_and_apply().values()),
        sorted(peer.pull_and_apply().values()),
    ]
    if any(len(t) != CATCH_UP_CARTS or t != totals[0] for t in totals):
        raise RuntimeError("the catch-up contenders disagree on the carts' totals")


def _aggregates(uno: UnoContender, peer: PeerContender, settings: Settings) -> list[_Result]:
    results = []
    for length in LENGTHS:
        saves = SAVES[length]
        results.append(
            _measure(
                _save(length),
                {
                    UNO: partial(uno.save_new, saves, length),
                    PEER: partial(peer.save_new, saves, length),
                    UNO_STORE: partial(uno.append_events, saves, length),
                },
                ops=saves,
                events_per_op=length,
                settings=settings,
            )
        )
    for length in LENGTHS:
        uno_ids, peer_ids, loads = (
            uno.save_new(LOADED, length),
            peer.save_new(LOADED, length),
            LOADS[length],
        )
        expected = loads * (length - 1)
        seen = (
            uno.load(uno_ids, loads),
            peer.load(peer_ids, loads),
            uno.read_events(uno_ids, loads),
        )
        if seen != (expected,) * 3:
            raise RuntimeError(f"loads of {length} events saw {seen} items, expected {expected}")
        results.append(
            _measure(
                _load(length),
                {
                    UNO: partial(uno.load, uno_ids, loads),
                    PEER: partial(peer.load, peer_ids, loads),
                    UNO_STORE: partial(uno.read_events, uno_ids, loads),
                },
                ops=loads,
                events_per_op=length,
                settings=settings,
            )
        )
    return results


def _check_sqlite_durability(recorder: SQLiteApplicationRecorder) -> None:
    """Raise unless eventsourcing wrote through one connection with ``synchronous=NORMAL``."""
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        (synchronous,) = cursor.fetchone()
    connections = recorder.datastore.pool.num_in_pool
    if synchronous != 1 or connections != 1:
        raise RuntimeError(
            f"eventsourcing's SQLite pool holds {connections} connections, synchronous="
            f"{synchronous}: the benchmark expected one connection at NORMAL (1)"
        )


def _targets(results: Sequence[_Result], peer_catch_up: str) -> list[_Target]:
    by_name = {r.scenario: r for r in results}
    catch_up = by_name[CATCH_UP]
    targets = [
        _Target(
            f"{CATCH_UP}: uno's runner / {peer_catch_up}",
            catch_up.speedup(UNO, peer_catch_up),
            TARGET_CATCH_UP if peer_catch_up == PEER else None,
        ),
        _Target(
            f"{CATCH_UP}: uno's runner / {UNO_STORE} (read_all + apply)",
            catch_up.speedup(UNO, UNO_STORE),
        ),
    ]
    scenarios = [by_name[s] for n in LENGTHS for s in (_save(n), _load(n))]
    targets += [
        _Target(f"{r.scenario}: uno / eventsourcing", r.speedup(UNO, PEER), TARGET_SAVE_LOAD)
        for r in scenarios
    ]
    targets += [
        _Target(f"{r.scenario}: uno / {UNO_STORE}", r.speedup(UNO, UNO_STORE)) for r in scenarios
    ]
    return targets


def _duration(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:,.2f} s"
    return f"{ns / 1e6:,.2f} ms" if ns >= 1e6 else f"{ns / 1000:,.1f} µs"


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
                    f"{timing.per_second * result.events_per_op:,.0f}",
                ]
            )
    return markdown_table(
        ["Scenario", "Contender", "per operation (median)", "min - max", "events/s"],
        rows,
        align="llrrr",
    )


def _targets_table(targets: Sequence[_Target]) -> str:
    return markdown_table(
        ["Comparison (speed-up: the other's time / uno's)", "Ratio", "Target", "Result"],
        [t.row() for t in targets],
        align="lrrl",
    )


def _report(
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
            f"(the default) for both.\n\n{_results_table(postgres)}\n\n"
            f"{_targets_table(_targets(postgres, PEER))}"
        )
    facts = machine_facts(
        ("uno-event-sourcing", "uno-event-storage", "eventsourcing", "psycopg", "msgspec")
    )
    return f"""\
## Event sourcing

What is measured: saving and loading aggregates through uno's `Repository`
and through the `eventsourcing` library's `Application`, and a projection
catching up over a long log through uno's `ProjectionRunner` and through
eventsourcing's. uno's event store used alone, without aggregates or runner,
is the floor that shows what uno's own layers cost.

The domain is a shopping cart, written in each library's idiom: an "opened"
event (eventsourcing's `Created` event, made by the aggregate's `__init__`),
then "item added" events (a SKU, a quantity, a unit price); the aggregate
keeps the owner, the item count and the total. An aggregate of N events is
one "opened" and N - 1 "item added". Snapshots are off and eventsourcing's
aggregate cache is off (both defaults); events are JSON on both sides.

- **Save**: make a new aggregate, record its N events, save it once (one
  append of N events to a new stream). {", ".join(f"{SAVES[n]} saves of {n:,}" for n in LENGTHS)}
  events per timed run. The uno store floor appends the same events with
  `append(..., expected_version=NO_STREAM)`.
- **Load**: get an aggregate of N events by id and replay it. {LOADED} aggregates
  of each length are stored first; {", ".join(f"{LOADS[n]} loads of {n:,}" for n in LENGTHS)}
  events per timed run, round-robin. The floor is `read_stream` and a
  hand-written fold.
- **Catch-up**: {CATCH_UP_CARTS:,} carts of {CATCH_UP_LENGTH} events
  ({CATCH_UP_EVENTS:,} events) are stored first; a projection reads the log
  from position 0 and sums every cart's total in a dict (at-least-once: the
  read model lives in memory). uno: a `Projection` under `ProjectionRunner`
  (batches of {PAGE}, checkpoint saved in the store after each batch), started,
  waited on with `wait_until_caught_up` (which polls every 10 ms) and stopped;
  its checkpoint is set back to 0 at the start of every run. eventsourcing: a
  `Projection` whose view is a `POPOTrackingRecorder` (totals and position in
  memory, nothing written: its cheapest view) under its `ProjectionRunner`,
  which makes its own `Application` and subscribes to it (pages of 500 on a
  puller thread, applied on a processing thread); the clock stops when the
  view tracks the log's last event (its own `wait` polls 100 to 800 ms apart,
  which would swamp the difference). Its SQLite recorder has no `subscribe`
  (`NotImplementedError`), so on SQLite its runner cannot run: there the same
  projection is fed by hand (`select_notifications` in pages of {PAGE},
  `mapper.to_domain_event`, `process_event`), the runner's work without its
  threads, and the ratio has no target. The uno store floor is `read_all`
  (pages of {PAGE}) and a hand-written fold into the dict.

uno runs every timed batch with `asyncio.Runner.run` on one loop kept open
for the whole benchmark; eventsourcing is blocking code called directly. Each
case runs once to warm up, then {settings.repeats} timed runs taking turns with
the other contenders of its scenario; the tables give the median run per
operation (one save, one load, one whole catch-up) with the fastest and
slowest, and events per second at the median. Ratios are speed-ups: the
other's median time over uno's, so above 1 uno is faster; against uno's own
event store, the ratio below 1 is what the `Repository` (or the runner) adds
on top of the store. The machine is a
shared 2-core virtual machine on which other work was running: expect
spreads of tens of percent.

{facts} SQLite {sqlite3.sqlite_version}.

### PostgreSQL

{postgres_part}

### SQLite

One database file per library in a temporary directory, in WAL mode with
`synchronous=NORMAL` for both: uno's default, set by hand on eventsourcing's
one connection (its default is `FULL`) and checked after the runs.

{_results_table(sqlite)}

{_targets_table(_targets(sqlite, PEER_PULL))}
"""
