"""Timing, machine facts and the markdown sections every benchmark shares."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

__all__ = [
    "Settings",
    "Timing",
    "compare",
    "machine_facts",
    "markdown_table",
    "verdict",
    "write_section",
]


@dataclass(frozen=True)
class Settings:
    """What the command line asks of every benchmark."""

    repeats: int
    """How many timed runs of each case; the median of them is reported."""


@dataclass(frozen=True)
class Timing:
    """The time one operation of a case took, over the repeats of a benchmark.

    Times are in nanoseconds per operation: each repeat's total divided by the
    number of operations it performed.
    """

    label: str
    median_ns: float
    min_ns: float
    max_ns: float

    @property
    def median_us(self) -> float:
        """The median time per operation, in microseconds."""
        return self.median_ns / 1000

    @property
    def per_second(self) -> float:
        """How many operations one second holds at the median time."""
        return 1e9 / self.median_ns

    def spread_us(self) -> str:
        """Return the fastest and slowest repeat as ``"min - max"`` microseconds."""
        return f"{self.min_ns / 1000:.2f} - {self.max_ns / 1000:.2f}"


def compare(cases: Mapping[str, Callable[[], object]], *, ops: int, repeats: int) -> list[Timing]:
    """Time each case ``repeats`` times and return their timings, in the order given.

    Every case is a callable that performs ``ops`` operations per call. Each is
    run once untimed to warm up, then the cases take turns, one run of each per
    round, so that a slow spell of a noisy machine hits all of them alike. The
    garbage collector runs before every timed run and stays enabled during it.
    """
    if ops < 1 or repeats < 1:
        raise ValueError(f"ops and repeats must be at least 1, got {ops} and {repeats}")
    for run in cases.values():
        run()
    totals: dict[str, list[int]] = {label: [] for label in cases}
    for _ in range(repeats):
        for label, run in cases.items():
            gc.collect()
            start = time.perf_counter_ns()
            run()
            totals[label].append(time.perf_counter_ns() - start)
    return [
        Timing(
            label=label,
            median_ns=statistics.median(runs) / ops,
            min_ns=min(runs) / ops,
            max_ns=max(runs) / ops,
        )
        for label, runs in totals.items()
    ]


def verdict(ratio: float, *, at_least: float | None = None, at_most: float | None = None) -> str:
    """Return ``"PASS"`` if ``ratio`` meets the given bounds, else ``"MISS"``."""
    low_ok = at_least is None or ratio >= at_least
    high_ok = at_most is None or ratio <= at_most
    return "PASS" if low_ok and high_ok else "MISS"


def machine_facts(packages: Iterable[str]) -> str:
    """Return one markdown line: the date, CPU, cores, Python and package versions."""
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {_cpu_model()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()} "
        f"({platform.system()} {platform.machine()}); {versions}."
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, align: str) -> str:
    """Return a markdown table; ``align`` holds one ``l`` or ``r`` per column."""
    if len(align) != len(header):
        raise ValueError(f"align needs {len(header)} letters, got {align!r}")
    rule = ["---" if a == "l" else "--:" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def write_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers of section ``name`` in the markdown file ``path``.

    The markers are ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``. Text
    outside them, and the sections of other benchmarks, stay as they are. A
    missing section is appended; a missing file is created with a title.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    head, found, rest = text.partition(start)
    if found:
        _, closed, tail = rest.partition(end)
        if not closed:
            raise ValueError(f"{path}: {start} has no matching {end}")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "an unknown CPU"
