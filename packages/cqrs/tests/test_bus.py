"""The buses: one handler per message, checked at build; sync and async handlers; DI; Result."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.cqrs import (
    BusBuilder,
    BusConfigurationError,
    Command,
    DuplicateHandler,
    Err,
    HandlerNotFound,
    MessageContext,
    MissingHandlerDependency,
    Ok,
    Query,
    Result,
)
from uno.di import ContainerBuilder, Scope

pytestmark = pytest.mark.anyio


class Deposit(Command):
    account_id: str
    amount: int


class Balance(Query):
    account_id: str


class Ledger:
    """A request-scoped service: one per send."""

    instances = 0

    def __init__(self) -> None:
        Ledger.instances += 1
        self.balances: dict[str, int] = {}


class Bank:
    """An app-scoped service shared by every send."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}


async def deposit(command: Deposit, bank: Bank) -> int:
    bank.balances[command.account_id] = bank.balances.get(command.account_id, 0) + command.amount
    return bank.balances[command.account_id]


def balance(query: Balance, bank: Bank) -> int:  # a sync handler: it runs in a worker thread
    assert threading.current_thread() is not threading.main_thread()
    return bank.balances.get(query.account_id, 0)


def bank_container() -> Any:
    builder = ContainerBuilder()
    builder.add(Bank, scope=Scope.APP)
    builder.add(Ledger, scope=Scope.REQUEST)
    return builder.build()


async def test_commands_and_queries_reach_their_handler_and_return_its_value() -> None:
    container = bank_container()
    buses = BusBuilder(container=container).register(deposit, balance).build()
    assert await buses.commands.send(Deposit(account_id="a", amount=5)) == 5
    assert await buses.commands.send(Deposit(account_id="a", amount=7)) == 12
    assert await buses.queries.send(Balance(account_id="a")) == 12
    assert await buses.queries.send(Balance(account_id="b")) == 0
    assert buses.commands.message_types == (Deposit,)
    assert buses.queries.handler_of(Balance) is balance


async def test_a_handler_s_dependencies_come_from_the_request_scope_of_the_send() -> None:
    seen: list[Ledger] = []

    async def record(command: Deposit, ledger: Ledger, again: Ledger) -> None:
        assert ledger is again  # one scope for the whole send
        seen.append(ledger)

    container = bank_container()
    buses = BusBuilder(container=container).register(record).build()
    await buses.commands.send(Deposit(account_id="a", amount=1))
    await buses.commands.send(Deposit(account_id="a", amount=1))
    assert seen[0] is not seen[1]  # the bus opened a scope per send
    async with container.scope() as request:
        context = MessageContext(scope=request)
        await buses.commands.send(Deposit(account_id="a", amount=1), context=context)
        await buses.commands.send(Deposit(account_id="a", amount=1), context=context)
        assert seen[2] is seen[3] is await request.aget(Ledger)  # the caller's scope


async def test_a_class_handler_is_built_per_send_with_its_constructor_s_services() -> None:
    class DepositHandler:
        def __init__(self, bank: Bank) -> None:
            self.bank = bank

        async def handle(self, command: Deposit, context: MessageContext) -> str:
            self.bank.balances[command.account_id] = command.amount
            return context.correlation_id

    container = bank_container()
    buses = BusBuilder(container=container).register(DepositHandler).build()
    context = MessageContext(correlation_id="req-1")
    assert await buses.commands.send(Deposit(account_id="z", amount=3), context=context) == "req-1"
    assert container.get(Bank).balances == {"z": 3}


async def test_a_handler_without_a_container_uses_its_defaults() -> None:
    async def greet(command: Deposit, suffix: str = "!") -> str:
        return f"{command.account_id}{suffix}"

    buses = BusBuilder().register(greet).build()
    assert await buses.commands.send(Deposit(account_id="hi", amount=1)) == "hi!"


def test_two_handlers_for_one_message_are_refused_at_build() -> None:
    async def other(command: Deposit) -> None:
        return None

    with pytest.raises(DuplicateHandler) as caught:
        BusBuilder(container=bank_container()).register(deposit, other).build()
    assert caught.value.code == "cqrs.duplicate_handler"
    assert caught.value.message_type == "Deposit"
    assert "deposit" in str(caught.value)
    assert "other" in str(caught.value)


def test_a_required_message_without_a_handler_is_refused_at_build() -> None:
    with pytest.raises(HandlerNotFound) as caught:
        BusBuilder(container=bank_container()).register(deposit).require(Balance).build()
    assert caught.value.code == "cqrs.no_handler"
    assert caught.value.message_type == "Balance"
    assert caught.value.known == ("Deposit",)


class Mailer:
    pass


async def notify(command: Deposit, mailer: Mailer) -> None:
    return None


def test_a_dependency_the_container_lacks_is_refused_at_build_naming_it() -> None:
    with pytest.raises(MissingHandlerDependency) as caught:
        BusBuilder(container=bank_container()).register(notify).build()
    assert (caught.value.handler, caught.value.parameter, caught.value.service) == (
        "notify",
        "mailer",
        "Mailer",
    )
    assert "Register it in the container" in str(caught.value)
    with pytest.raises(MissingHandlerDependency):
        BusBuilder().register(notify).build()  # no container at all


def test_what_is_not_a_handler_is_refused_when_registered() -> None:
    def no_message(amount: int) -> None:
        return None

    def untyped(command) -> None:  # type: ignore[no-untyped-def]
        return None

    class NoHandle:
        pass

    for bad, fragment in [
        (no_message, "not a Command or Query class"),
        (untyped, "has no type annotation"),
        (NoHandle, "without a handle"),
        (42, "not a function or class"),
    ]:
        with pytest.raises(BusConfigurationError) as caught:
            BusBuilder().register(bad)
        assert fragment in str(caught.value)
        assert caught.value.code == "cqrs.invalid_configuration"


async def test_an_unknown_message_at_send_is_a_typed_error() -> None:
    buses = BusBuilder(container=bank_container()).register(deposit).build()
    with pytest.raises(HandlerNotFound) as caught:
        await buses.commands.send(Balance(account_id="a"))
    assert caught.value.message_type == "Balance"


class Withdraw(Command):
    account_id: str
    amount: int


class InsufficientFunds(Exception):
    code = "bank.insufficient_funds"


def withdraw(command: Withdraw) -> Result[int, InsufficientFunds]:
    if command.amount > 10:
        return Err(InsufficientFunds(f"cannot take {command.amount}"))
    return Ok(10 - command.amount)


async def test_a_result_is_raised_or_returned_as_the_caller_chooses() -> None:
    buses = BusBuilder().register(withdraw).build()
    assert await buses.commands.send(Withdraw(account_id="a", amount=3)) == 7
    with pytest.raises(InsufficientFunds):
        await buses.commands.send(Withdraw(account_id="a", amount=30))
    outcome = await buses.commands.send(Withdraw(account_id="a", amount=30), as_result=True)
    match outcome:
        case Err(error):
            assert isinstance(error, InsufficientFunds)
        case Ok(_):
            raise AssertionError("an Err was expected")
    assert await buses.commands.send(Withdraw(account_id="a", amount=4), as_result=True) == Ok(6)


async def test_an_exception_comes_back_as_err_when_a_result_is_asked_for() -> None:
    async def broken(command: Deposit) -> None:
        raise KeyError("missing")

    buses = BusBuilder().register(broken).build()
    outcome = await buses.commands.send(Deposit(account_id="a", amount=1), as_result=True)
    assert isinstance(outcome, Err)
    assert isinstance(outcome.error, KeyError)
    assert not outcome.is_ok()


async def test_scan_registers_the_marked_handlers_and_requires_its_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    app = importlib.import_module("cqrs_scanned_app")
    messages = importlib.import_module("cqrs_scanned_app.messages")
    buses = BusBuilder().scan("cqrs_scanned_app").build()
    assert await buses.commands.send(app.Ping(text="x")) == "pong x"
    assert await buses.queries.send(messages.Echo(text="y")) == "y"
    assert buses.commands.message_types == (app.Ping,)
    with pytest.raises(HandlerNotFound) as caught:
        BusBuilder().scan("cqrs_scanned_orphans").build()
    assert caught.value.message_type == "Orphan"


class Echo(Query):
    n: int


class Twice(Command):
    n: int


def echo(query: Echo) -> int:
    return query.n


async def twice(command: Twice) -> int:
    await anyio.lowlevel.checkpoint()
    return command.n * 2


@settings(max_examples=30, deadline=None)
@given(amounts=st.lists(st.integers(-1000, 1000), min_size=1, max_size=30))
def test_concurrent_sends_each_get_their_own_handler_result(amounts: list[int]) -> None:
    """Many sends at once, sync and async handlers: each caller gets its own message's answer."""
    buses = BusBuilder().register(echo, twice).build()
    got: dict[int, tuple[int, int]] = {}

    async def one(index: int, n: int) -> None:
        got[index] = (
            await buses.queries.send(Echo(n=n)),
            await buses.commands.send(Twice(n=n)),
        )

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for index, n in enumerate(amounts):
                group.start_soon(one, index, n)

    anyio.run(main)
    assert got == {i: (n, 2 * n) for i, n in enumerate(amounts)}
