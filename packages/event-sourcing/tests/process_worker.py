"""A process manager runner process for the takeover test on PostgreSQL (not a test module).

Usage: ``python process_worker.py URL SCHEMA STATE_FILE``. Runs the transfer
process manager until killed, with a bank that debits but never returns from
sending a credit (as if the call hung), and writes ``{"active": ...,
"stalled": <transfer id or null>}`` to ``STATE_FILE`` (JSON) whenever it changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from test_process_manager import Account, Bank, Credit, TransferProcess, bank_registry

from uno.event_sourcing import ProcessManagerRunner, Repository
from uno.event_storage import open_event_store
from uno.events import EventMetadata


class StallingBank(Bank):
    """Debits, then hangs forever on the first credit it is sent."""

    stalled: str | None = None

    async def send(self, command: object, /, *, metadata: EventMetadata | None = None) -> object:
        if isinstance(command, Credit):
            self.stalled = command.transfer_id
            await anyio.sleep_forever()
        return await super().send(command, metadata=metadata)


async def main(argv: list[str]) -> None:
    url, schema, state_file = argv
    state = Path(state_file)
    async with open_event_store(
        url, registry=bank_registry(), schema=schema, poll_interval=0.05
    ) as store:
        bank = StallingBank(Repository(store, Account))
        async with ProcessManagerRunner(
            store, [TransferProcess], sender=bank, lease_interval=0.1
        ) as runner:
            written: dict[str, object] | None = None
            while True:
                now: dict[str, object] = {"active": runner.active, "stalled": bank.stalled}
                if now != written:
                    written = now
                    temporary = state.with_suffix(".tmp")
                    temporary.write_text(json.dumps(now))
                    temporary.replace(state)
                await anyio.sleep(0.02)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
