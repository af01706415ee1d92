"""Run the benchmarks and write their sections of ``docs/benchmarks.md``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import cqrs_bus, di, event_sourcing, event_storage, read_models, serialization
from benchmarks._harness import Settings, write_section

BENCHMARKS: dict[str, Callable[[Settings], str]] = {
    "serialization": serialization.run,
    "event_storage": event_storage.run,
    "event_sourcing": event_sourcing.run,
    "di": di.run,
    "read_models": read_models.run,
    "cqrs_bus": cqrs_bus.run,
}
"""Every benchmark by the name of its section; each returns its markdown."""

REPEATS, QUICK_REPEATS = 7, 3
REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks named on the command line, or all; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPEATS} timed runs instead of {REPEATS}"
    )
    parser.add_argument(
        "--output", type=Path, default=REPORT, help="the markdown file to update (%(default)s)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"unknown benchmarks {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    settings = Settings(repeats=QUICK_REPEATS if args.quick else REPEATS)
    for name in args.names or BENCHMARKS:
        print(f"Running {name} ({settings.repeats} timed runs)...", flush=True)
        section = BENCHMARKS[name](settings)
        write_section(args.output, name, section)
        print(section)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
