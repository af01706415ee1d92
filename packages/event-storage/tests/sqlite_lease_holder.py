"""A lease holder process for the multi-process SQLite lease tests (not a test module).

Usage: ``python sqlite_lease_holder.py DB TTL GO LOG hold NAME`` or
``... churn SECONDS NAME [NAME ...] [--die-after SECONDS]``.

Each waits until the file ``GO`` exists, so that the processes start
together, then writes what it did to ``LOG`` as JSON lines, one write each,
so a line survives the process being killed right after. Times are
milliseconds of the wall clock, which the processes of one machine share.

- ``hold``: take ``NAME`` (trying every 20 ms), write ``held``, then check
  the lease every 20 ms; once a check fails write ``lost`` with the time
  before the last check that passed, release it, and exit.
- ``churn``: for ``SECONDS``, take a random one of the names, hold it for up
  to 50 ms while checking it, and release it; write a ``hold`` line for each.
  With ``--die-after``, kill itself (SIGKILL) while holding a lease.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import IO

import anyio

from uno.event_storage.sqlite import SQLiteLease, SQLiteLeaseStore


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def record(log: IO[str], kind: str, **fields: object) -> None:
    log.write(json.dumps({"kind": kind, "pid": os.getpid(), **fields}) + "\n")


async def take(leases: SQLiteLeaseStore, name: str) -> tuple[SQLiteLease, int, int, int]:
    refused = 0
    while True:
        before = now_ms()
        lease = await leases.try_acquire(name)
        after = now_ms()
        if lease is not None:
            assert isinstance(lease, SQLiteLease)
            return lease, before, after, refused
        refused += 1
        await anyio.sleep(0.02)


async def hold(leases: SQLiteLeaseStore, log: IO[str], name: str) -> None:
    lease, before, after, refused = await take(leases, name)
    record(
        log,
        "held",
        name=name,
        generation=lease.generation,
        holder=lease.holder,
        before=before,
        after=after,
        refused=refused,
    )
    last_ok = after
    while True:
        checked = now_ms()
        if not await lease.check():
            break
        last_ok = checked
        await anyio.sleep(0.02)
    record(log, "lost", name=name, last_ok=last_ok, noticed=now_ms())
    await lease.release()


async def churn(
    leases: SQLiteLeaseStore,
    log: IO[str],
    seconds: float,
    names: list[str],
    die_after: float | None,
) -> None:
    started = time.monotonic()
    refused = 0
    while time.monotonic() - started < seconds:
        name = random.choice(names)
        lease = await leases.try_acquire(name)
        acquired = now_ms()
        if lease is None:
            refused += 1
            await anyio.sleep(random.uniform(0, 0.01))
            continue
        assert isinstance(lease, SQLiteLease)
        last_ok, lost = acquired, False
        until = time.monotonic() + random.uniform(0, 0.05)
        while time.monotonic() < until:
            checked = now_ms()
            if not await lease.check():
                lost = True
                break
            last_ok = checked
            await anyio.sleep(0.005)
        line = {"name": name, "generation": lease.generation, "acquired": acquired}
        record(log, "hold", **line, last_ok=last_ok, lost=lost)
        if die_after is not None and time.monotonic() - started > die_after:
            record(log, "dying", name=name, generation=lease.generation)
            os.kill(os.getpid(), signal.SIGKILL)
        await lease.release()
    record(log, "done", refused=refused)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("ttl", type=float)
    parser.add_argument("go", type=Path)
    parser.add_argument("log", type=Path)
    modes = parser.add_subparsers(dest="mode", required=True)
    modes.add_parser("hold").add_argument("name")
    churning = modes.add_parser("churn")
    churning.add_argument("seconds", type=float)
    churning.add_argument("names", nargs="+")
    churning.add_argument("--die-after", type=float)
    args = parser.parse_args(argv)
    leases = SQLiteLeaseStore(args.db, ttl=args.ttl)
    with args.log.open("a", buffering=1) as log:
        record(log, "ready")
        while not args.go.exists():  # noqa: ASYNC110 - another process makes the file
            await anyio.sleep(0.01)
        if args.mode == "hold":
            await hold(leases, log, args.name)
        else:
            await churn(leases, log, args.seconds, args.names, args.die_after)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
