"""A projection runner process for the multi-process partition tests (not a test module).

Usage: ``python partition_worker.py URL SCHEMA WORKER PARTITIONS MAX_PARTITIONS STATE_FILE``.
Runs the partitioned ``SqlBalances`` read model until killed, and writes the
partitions it holds to ``STATE_FILE`` (JSON) whenever they change. An empty
``SCHEMA`` is for SQLite, whose leases then expire after one second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from ledger import SqlBalances, ledger_registry

from uno.event_sourcing import ProjectionRunner
from uno.event_storage import open_event_store


async def main(argv: list[str]) -> None:
    url, schema, worker, partitions, most, state_file = argv

    class Partitioned(SqlBalances):
        pass

    Partitioned.partitions = int(partitions)
    projection = Partitioned(schema=schema or None, worker=worker)
    state = Path(state_file)
    options: dict[str, object] = {"schema": schema} if schema else {"lease_ttl": 1.0}
    async with (
        open_event_store(url, registry=ledger_registry(), poll_interval=0.05, **options) as store,
        ProjectionRunner(
            store, [projection], lease_interval=0.2, max_partitions=int(most), batch_size=20
        ) as runner,
    ):
        held: list[str] | None = None
        while True:
            now = runner.held_partitions()
            if now != held:
                held = now
                temporary = state.with_suffix(".tmp")
                temporary.write_text(json.dumps(held))
                temporary.replace(state)
            await anyio.sleep(0.05)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
