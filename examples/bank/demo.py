"""The bank demo: a small event-sourced bank, end to end, told as a short story.

Run it with ``nox -s demo``. Everything runs on the embedded default, an
event store in a SQLite file (in a temporary directory), with no server:
accounts are opened and used, a rule refuses a withdrawal, two tellers
collide on one account, a transfer saga moves money (and undoes one transfer
that cannot finish), snapshots shorten loading, a balances read model is kept
up to date and rebuilt from the log, and the query bus answers from it.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))  # the domain module next to this file

from domain import (
    Account,
    AccountOpened,
    AccountsOverThreshold,
    Balance,
    GetBalance,
    InsufficientFunds,
    MoneyDeposited,
    MoneyWithdrawn,
    Teller,
    Transfer,
    TransferRequested,
    bank_registry,
)

from uno.cqrs import BusBuilder
from uno.cqrs.read_models import RepositoryBase, open_repository
from uno.cqrs.read_models.sqlite import SQLiteRepository
from uno.event_sourcing import (
    ConcurrencyConflict,
    ProcessManagerRunner,
    ProjectionRunner,
    Repository,
    TransactionalProjection,
    UnitOfWork,
    handles,
)
from uno.event_storage import SQLiteEventStore, SQLiteTransaction, open_event_store
from uno.events import ManualClock, RecordedEvent, StoreTransaction


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the query side: a balances read model, in the same SQLite file ---------------------


def _sqlite(tx: StoreTransaction) -> SQLiteTransaction:
    assert isinstance(tx, SQLiteTransaction)  # the demo's store is the SQLite one
    return tx


class Balances(TransactionalProjection):
    """Each account's balance document, written in the transaction that moves its checkpoint."""

    name = "balances"

    def __init__(self, balances: SQLiteRepository[Balance]) -> None:
        self.balances = balances

    @handles
    async def opened(self, event: RecordedEvent[AccountOpened], tx: StoreTransaction) -> None:
        account_id = event.stream_id.removeprefix("account-")
        await self.balances.within(_sqlite(tx)).upsert(
            Balance(id=account_id, owner=event.data.owner)
        )

    @handles
    async def deposited(self, event: RecordedEvent[MoneyDeposited], tx: StoreTransaction) -> None:
        await self._add(event.stream_id, event.data.amount, tx)

    @handles
    async def withdrawn(self, event: RecordedEvent[MoneyWithdrawn], tx: StoreTransaction) -> None:
        await self._add(event.stream_id, -event.data.amount, tx)

    async def _add(self, stream_id: str, delta: int, tx: StoreTransaction) -> None:
        balances = self.balances.within(_sqlite(tx))
        account_id = stream_id.removeprefix("account-")
        found = await balances.get(account_id) or Balance(id=account_id)
        await balances.upsert(found.model_copy(update={"balance": found.balance + delta}))

    async def reset(self, tx: StoreTransaction) -> None:
        await self.balances.within(_sqlite(tx)).clear()


def query_handlers(balances: RepositoryBase[Balance]) -> list[Callable[..., Any]]:
    """The handlers of the bank's queries, reading the balances read model."""

    async def get_balance(query: GetBalance) -> int | None:
        found = await balances.get(query.account_id)
        return None if found is None else found.balance

    async def accounts_over(query: AccountsOverThreshold) -> list[Balance]:
        rich = balances.where.ge("balance", query.minimum)
        return await balances.query().filter(rich).order_by("-balance").all()

    return [get_balance, accounts_over]


async def read_balances(balances: RepositoryBase[Balance]) -> dict[str, int]:
    return {found.id: found.balance for found in await balances.query().all()}


async def settle(runner: ProcessManagerRunner, store: SQLiteEventStore) -> None:
    """Wait until the saga handled every event, those its own commands caused included."""
    while True:
        before = await store.log_position()
        await runner.wait_until_caught_up()
        if await store.log_position() == before:
            return


# -- the story --------------------------------------------------------------------------


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="uno-bank-"))
    url = f"sqlite:///{folder / 'bank.db'}"
    say(f"The bank opens. Its ledger is one SQLite file: {folder / 'bank.db'}")
    async with (
        open_event_store(url, registry=bank_registry(), auto_migrate=True) as opened,
        open_repository(url, Balance, auto_migrate=True) as documents,
    ):
        assert isinstance(opened, SQLiteEventStore)  # the embedded default
        assert isinstance(documents, SQLiteRepository)  # in the same SQLite file
        store, balances = opened, documents
        accounts = Repository(store, Account)
        for chapter in (open_accounts, refused_withdrawal, tellers_collide, transfers, snapshots):
            say()
            await chapter(store, accounts)
        say()
        await balances_projection(store, balances)
        say()
        await queries(balances)
    say()
    say("The bank closes for the day; every fact is still in its ledger. done.")


async def open_accounts(store: SQLiteEventStore, accounts: Repository[Account]) -> None:
    say("1. Three customers open accounts and make deposits, in one unit of work.")
    async with UnitOfWork(store) as uow:
        for account_id, owner, amount in (("ada", "Ada", 100), ("bob", "Bob", 20), ("cy", "Cy", 5)):
            account = Account.open(account_id, owner)
            account.deposit(amount)
            uow.add(account)
    for account_id in ("ada", "bob", "cy"):
        account = await accounts.get(account_id)
        say(
            f"   {account.owner:<4} balance {account.balance:>4}   "
            f"(stream {account.stream_id}, version {account.version})"
        )


async def refused_withdrawal(store: SQLiteEventStore, accounts: Repository[Account]) -> None:
    say("2. Cy tries to withdraw 50. The account's rule refuses it, and nothing is stored.")
    cy = await accounts.get("cy")
    try:
        cy.withdraw(50)
    except InsufficientFunds as error:
        say(f"   refused: {error} [code {error.code}]")
    say(f"   Cy's stream still holds {len(await store.read_stream('account-cy'))} events.")


async def tellers_collide(store: SQLiteEventStore, accounts: Repository[Account]) -> None:
    say("3. Two tellers load Ada's account at the same moment and both pay out.")
    first, second = await accounts.get("ada"), await accounts.get("ada")
    first.withdraw(30)
    second.withdraw(60)
    await accounts.save(first)
    say("   The first teller saves: Ada withdrew 30.")
    try:
        await accounts.save(second)
    except ConcurrencyConflict as error:
        say(
            f"   The second teller's save is refused: loaded at version "
            f"{error.expected_version}, the account is now at {error.actual_version}."
        )
    retry = await accounts.get("ada")
    retry.withdraw(60)
    await accounts.save(retry)
    say(f"   The teller reloads and retries: Ada's balance is {retry.balance}.")


async def transfers(store: SQLiteEventStore, accounts: Repository[Account]) -> None:
    say("4. Transfers run as a saga: debit the source, credit the target, refund on failure.")
    bob = await accounts.get("bob")
    bob.freeze()
    await accounts.save(bob)
    say("   (Bob's account was frozen this morning: it refuses credits.)")
    clock = ManualClock(datetime.now(UTC))
    async with ProcessManagerRunner(
        store, [Transfer], sender=Teller(accounts), clock=clock
    ) as sagas:
        for transfer_id, source, target, amount in (
            ("t-1", "ada", "cy", 5),
            ("t-2", "ada", "bob", 4),
        ):
            request = TransferRequested(
                transfer_id=transfer_id, source=source, target=target, amount=amount
            )
            await store.append(f"request-{transfer_id}", [request])
        await settle(sagas, store)
        clock.advance(timedelta(minutes=10))
        await sagas.fire_due()
        await settle(sagas, store)
    sagas_repository = Repository(store, Transfer)
    for transfer_id, story in (("t-1", "Ada -> Cy, 5"), ("t-2", "Ada -> Bob, 4")):
        transfer = await sagas_repository.get(transfer_id)
        say(f"   transfer {transfer_id} ({story}): {transfer.outcome}")
    ada, cy = await accounts.get("ada"), await accounts.get("cy")
    say(f"   Ada {ada.balance}, Cy {cy.balance}: Ada paid Cy; her 4 for Bob came back as a refund.")


async def snapshots(store: SQLiteEventStore, accounts: Repository[Account]) -> None:
    say("5. Ada's account takes a snapshot every 5 events, so loading it is short.")
    snapshot = await store.load_snapshot("account-ada")
    version = snapshot.stream_version if snapshot is not None else 0
    ada = await accounts.get("ada")
    say(
        f"   Latest snapshot at version {version}; loading Ada replays "
        f"{ada.version - version} event(s) after it, to version {ada.version}."
    )


async def balances_projection(store: SQLiteEventStore, balances: SQLiteRepository[Balance]) -> None:
    say("6. A balances read model follows the log, exactly once, in the same SQLite file.")
    async with ProjectionRunner(store, [Balances(balances)]) as projections:
        await projections.wait_until_caught_up()
        say(f"   balances: {await read_balances(balances)}")
        status = (await projections.status())["balances"]
        say(
            f"   status: {status.state.value}, position {status.position}, "
            f"lag {status.lag_events} events"
        )
        say()
        say("7. The read model is rebuilt from the whole log, with progress.")
        reported: list[str] = []
        applied = await projections.rebuild(
            "balances", progress=lambda done, total: reported.append(f"{done}/{total}")
        )
        say(f"   progress: {', '.join(reported)}; {applied} events applied")
        say(f"   balances after the rebuild: {await read_balances(balances)}")


async def queries(balances: RepositoryBase[Balance]) -> None:
    say("8. The counter asks the query bus; the handlers read the balances read model.")
    bus = BusBuilder().register(*query_handlers(balances)).build().queries
    ada = await bus.send(GetBalance(account_id="ada"))
    nobody = await bus.send(GetBalance(account_id="zoe"))
    say(f"   GetBalance(ada) -> {ada}; GetBalance(zoe) -> {nobody} (no such account)")
    rich = await bus.send(AccountsOverThreshold(minimum=10))
    listed = ", ".join(f"{found.owner} {found.balance}" for found in rich)
    say(f"   AccountsOverThreshold(10), by specification balance >= 10: {listed}")


if __name__ == "__main__":
    anyio.run(main)
