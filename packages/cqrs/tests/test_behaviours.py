"""The pipeline behaviours, on real stores: validation, authorization, logging, tracing,
unit of work (uno.event_sourcing's, on SQLite), retry on real conflicts, timeouts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import Field

from uno.cqrs import (
    AuthorizationBehaviour,
    BusBuilder,
    Command,
    FieldError,
    LoggingBehaviour,
    Message,
    MessageContext,
    MessageTimeout,
    Next,
    NotAuthenticated,
    NotAuthorized,
    Query,
    RetryBehaviour,
    TimeoutBehaviour,
    TracingBehaviour,
    UnitOfWorkBehaviour,
    UnitOfWorkLike,
    ValidationBehaviour,
    ValidationFailed,
    parse_message,
)
from uno.event_sourcing import (
    Aggregate,
    ConcurrencyConflict,
    Repository,
    UnitOfWork,
    applies,
    register_types,
)
from uno.event_storage import ClosableEventStore, open_event_store
from uno.events import Event, EventRegistry, RecordedEvent

pytestmark = pytest.mark.anyio


# -- a tiny domain --------------------------------------------------------------


class Opened(Event):
    event_type = "cqrs_test.Opened"


class Deposited(Event):
    event_type = "cqrs_test.Deposited"
    amount: int


class Account(Aggregate):
    category = "account"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance = 0

    def deposit(self, amount: int) -> None:
        self.record(Deposited(amount=amount))

    @applies
    def _opened(self, event: Opened) -> None:
        self.balance = 0

    @applies
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


async def open_accounts(store: ClosableEventStore, *ids: str) -> None:
    accounts = Repository(store, Account)
    for account_id in ids:
        account = Account(account_id)
        account.record(Opened())
        await accounts.save(account)


class Line(Command):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class PlaceOrder(Command):
    customer: str = Field(min_length=1)
    lines: list[Line]


class Deposit(Command):
    account_id: str
    amount: int


class GetBalance(Query):
    account_id: str


@dataclass(frozen=True)
class User:
    id: str
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()


class CloseAccount(Command):
    roles: ClassVar[frozenset[str]] = frozenset({"teller", "manager"})
    permissions: ClassVar[frozenset[str]] = frozenset({"accounts:close"})
    account_id: str


async def close_account(command: CloseAccount) -> str:
    return f"closed {command.account_id}"


async def place_order(command: PlaceOrder) -> int:
    return sum(line.quantity for line in command.lines)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ClosableEventStore]:
    registry = register_types(EventRegistry())
    registry.register(Opened, Deposited)
    async with open_event_store(
        f"sqlite:///{tmp_path / 'events.db'}", registry=registry, auto_migrate=True
    ) as opened:
        await open_accounts(opened, "a", "b", "c")
        yield opened


# -- validation -----------------------------------------------------------------


def test_parse_message_collects_every_field_error_with_its_path() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_message(
            PlaceOrder,
            {"customer": "", "lines": [{"sku": "a", "quantity": 1}, {"sku": "", "quantity": 0}]},
        )
    error = caught.value
    assert error.code == "cqrs.validation_failed"
    assert error.message_type == "PlaceOrder"
    assert sorted(e.location for e in error.errors) == [
        "customer",
        "lines.1.quantity",
        "lines.1.sku",
    ]
    assert {e.kind for e in error.errors} == {"string_too_short", "greater_than"}
    assert parse_message(PlaceOrder, b'{"customer": "c", "lines": []}').customer == "c"
    with pytest.raises(ValidationFailed) as extra:
        parse_message(PlaceOrder, {"customer": "c", "lines": [], "discount": 5})
    assert [e.location for e in extra.value.errors] == ["discount"]  # unknown fields refused


async def test_validation_runs_custom_rules_and_catches_unvalidated_messages() -> None:
    def no_duplicate_skus(order: PlaceOrder) -> list[FieldError]:
        skus = [line.sku for line in order.lines]
        return [
            FieldError(("lines", i, "sku"), f"{sku!r} appears twice", "duplicate")
            for i, sku in enumerate(skus)
            if sku in skus[:i]
        ]

    called: list[PlaceOrder] = []

    async def counted(command: PlaceOrder) -> int:
        called.append(command)
        return len(command.lines)

    buses = (
        BusBuilder()
        .use(ValidationBehaviour({PlaceOrder: [no_duplicate_skus]}))
        .register(counted)
        .build()
    )
    good = PlaceOrder(customer="c", lines=[Line(sku="a", quantity=1), Line(sku="b", quantity=2)])
    assert await buses.commands.send(good) == 2
    twice = PlaceOrder(customer="c", lines=[Line(sku="a", quantity=1), Line(sku="a", quantity=2)])
    with pytest.raises(ValidationFailed) as caught:
        await buses.commands.send(twice)
    assert [(e.location, e.kind) for e in caught.value.errors] == [("lines.1.sku", "duplicate")]
    unchecked = PlaceOrder.model_construct(customer="", lines=[])  # skips pydantic's checks
    with pytest.raises(ValidationFailed) as again:
        await buses.commands.send(unchecked)
    assert [e.location for e in again.value.errors] == ["customer"]
    assert called == [good]  # the handler never saw an invalid message


# -- authorization --------------------------------------------------------------


async def test_roles_and_permissions_declared_on_the_command_are_enforced() -> None:
    buses = BusBuilder().use(AuthorizationBehaviour()).register(close_account).build()
    command = CloseAccount(account_id="a")
    with pytest.raises(NotAuthenticated) as anonymous:
        await buses.commands.send(command)
    assert anonymous.value.code == "cqrs.not_authenticated"
    clerk = User("u1", roles=frozenset({"clerk"}), permissions=frozenset({"accounts:close"}))
    with pytest.raises(NotAuthorized) as no_role:
        await buses.commands.send(command, context=MessageContext(principal=clerk))
    assert no_role.value.code == "cqrs.not_authorized"
    assert "manager, teller" in no_role.value.reason
    teller = User("u2", roles=frozenset({"teller"}))
    with pytest.raises(NotAuthorized) as no_permission:
        await buses.commands.send(command, context=MessageContext(principal=teller))
    assert "accounts:close" in no_permission.value.reason
    allowed = User("u3", roles=frozenset({"teller"}), permissions=frozenset({"accounts:close"}))
    assert await buses.commands.send(command, context=MessageContext(principal=allowed)) == (
        "closed a"
    )


async def test_a_policy_decides_with_the_message_and_may_say_why() -> None:
    class OwnAccountsOnly:
        async def allows(self, principal: Any, message: Message) -> bool | str:
            if isinstance(message, Deposit) and message.account_id != principal.id:
                return f"{principal.id} does not own {message.account_id}"
            return True

    async def deposit(command: Deposit) -> int:
        return command.amount

    buses = BusBuilder().use(AuthorizationBehaviour(OwnAccountsOnly())).register(deposit).build()
    alice = MessageContext(principal=User("alice"))
    assert await buses.commands.send(Deposit(account_id="alice", amount=5), context=alice) == 5
    with pytest.raises(NotAuthorized) as caught:
        await buses.commands.send(Deposit(account_id="bob", amount=5), context=alice)
    assert caught.value.reason == "alice does not own bob"
    assert caught.value.principal == "alice"


# -- order, markers, logging, tracing -------------------------------------------


class Audited:
    """A marker: commands that subclass it get the audit behaviour."""


class AuditedDeposit(Deposit, Audited):
    pass


async def test_behaviours_run_in_order_around_the_messages_they_apply_to() -> None:
    trail: list[str] = []

    @dataclass
    class Mark:
        name: str

        async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
            trail.append(f"{self.name}>")
            result = await call_next(message, context)
            trail.append(f"<{self.name}")
            return result

    async def deposit(command: Deposit) -> int:
        trail.append("handler")
        return command.amount

    async def audited(command: AuditedDeposit) -> int:
        trail.append("handler")
        return command.amount

    buses = (
        BusBuilder()
        .use(Mark("outer"))
        .use(Mark("audit"), applies_to=Audited)
        .use(Mark("queries"), applies_to=Query)
        .use(Mark("big"), when=lambda t: t.__name__.startswith("Audited"))
        .register(deposit, audited)
        .build()
    )
    await buses.commands.send(Deposit(account_id="a", amount=1))
    assert trail == ["outer>", "handler", "<outer"]
    trail.clear()
    await buses.commands.send(AuditedDeposit(account_id="a", amount=1))
    assert trail == ["outer>", "audit>", "big>", "handler", "<big", "<audit", "<outer"]


async def test_logging_says_what_was_handled_without_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def deposit(command: Deposit) -> int:
        if command.amount < 0:
            raise ValidationFailed("Deposit", [FieldError(("amount",), "negative", "negative")])
        return command.amount

    buses = BusBuilder().use(LoggingBehaviour()).register(deposit).build()
    with caplog.at_level(logging.DEBUG, logger="uno.cqrs"):
        await buses.commands.send(
            Deposit(account_id="secret-iban", amount=5),
            context=MessageContext(correlation_id="req-9"),
        )
        with pytest.raises(ValidationFailed):
            await buses.commands.send(Deposit(account_id="secret-iban", amount=-1))
    handled, failed = caplog.records
    assert handled.getMessage() == "command Deposit handled"
    assert handled.__dict__["correlation_id"] == "req-9"
    assert handled.__dict__["outcome"] == "handled"
    assert failed.levelno == logging.WARNING
    assert failed.__dict__["error_code"] == "cqrs.validation_failed"
    assert "secret-iban" not in caplog.text
    assert "payload" not in handled.__dict__


async def test_tracing_makes_a_span_and_metrics_per_message() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    async def deposit(command: Deposit) -> int:
        if command.amount < 0:
            raise ConcurrencyConflict("account-a", 1, 2)
        return command.amount

    buses = (
        BusBuilder()
        .use(TracingBehaviour(tracer_provider, meter_provider))
        .register(deposit)
        .build()
    )
    await buses.commands.send(Deposit(account_id="a", amount=1))
    with pytest.raises(ConcurrencyConflict):
        await buses.commands.send(Deposit(account_id="a", amount=-1))
    ok, failed = exporter.get_finished_spans()
    assert ok.name == "command Deposit"
    assert ok.attributes is not None
    assert ok.attributes["uno.message.type"] == "Deposit"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["uno.error.code"] == "event_sourcing.concurrency_conflict"
    assert [e.name for e in failed.events] == ["exception"]
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[tuple[str, str], Any] = {
        (metric.name, str(dict(point.attributes or {})["uno.outcome"])): point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }
    assert points[("uno.cqrs.messages", "handled")].value == 1
    assert points[("uno.cqrs.messages", "failed")].value == 1
    assert points[("uno.cqrs.duration", "handled")].count == 1


# -- unit of work, retry, timeout on a real store ------------------------------


@dataclass
class Published:
    """Events the unit of work's subscriber saw, and whether they were stored by then."""

    store: ClosableEventStore
    events: list[tuple[str, bool]] = field(default_factory=list)

    async def __call__(self, event: RecordedEvent[Event]) -> None:
        stored = [e.event_id for e in await self.store.read_stream(event.stream_id)]
        self.events.append((event.event_type, event.event_id in stored))


def bank_buses(
    store: ClosableEventStore, published: Published, *, retry: RetryBehaviour | None = None
) -> Any:
    accounts = Repository(store, Account)

    async def deposit(command: Deposit, context: MessageContext) -> int:
        uow: UnitOfWork = context.unit_of_work
        account = await uow.get(accounts, command.account_id)
        account.deposit(command.amount)
        if command.amount == 13:
            raise RuntimeError("unlucky")
        context.after_commit(after)
        return account.balance

    async def after() -> None:
        published.events.append(("after_commit", True))

    async def balance(query: GetBalance) -> int:
        return (await accounts.get(query.account_id)).balance

    def new_unit_of_work(context: MessageContext) -> UnitOfWorkLike:
        return UnitOfWork(store, subscribers=[published])

    builder = BusBuilder()
    if retry is not None:
        builder.use(retry, applies_to=Command)
    builder.use(TimeoutBehaviour()).use(UnitOfWorkBehaviour(new_unit_of_work), applies_to=Command)
    return builder.register(deposit, balance).build()


async def test_a_command_commits_its_unit_of_work_then_publishes(
    store: ClosableEventStore,
) -> None:
    published = Published(store)
    buses = bank_buses(store, published)
    assert await buses.commands.send(Deposit(account_id="a", amount=5)) == 5
    assert await buses.commands.send(Deposit(account_id="a", amount=7)) == 12
    assert await buses.queries.send(GetBalance(account_id="a")) == 12
    # Each event was published once, after it was stored; then the callback.
    assert published.events == [
        ("cqrs_test.Deposited", True),
        ("after_commit", True),
        ("cqrs_test.Deposited", True),
        ("after_commit", True),
    ]


async def test_a_failing_command_rolls_back_and_publishes_nothing(
    store: ClosableEventStore,
) -> None:
    published = Published(store)
    buses = bank_buses(store, published)
    with pytest.raises(RuntimeError, match="unlucky"):
        await buses.commands.send(Deposit(account_id="a", amount=13))
    assert [e.event_type for e in await store.read_stream("account-a")] == ["cqrs_test.Opened"]
    assert published.events == []


async def test_concurrent_commands_on_one_aggregate_are_retried_until_both_apply(
    store: ClosableEventStore,
) -> None:
    """Two deposits load the same version; one conflicts, reloads, and applies on top."""
    published = Published(store)
    attempts: list[int] = []
    loaded = anyio.Event()
    both = [0]

    class Gate:
        async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
            attempts.append(1)
            return await call_next(message, context)

    accounts = Repository(store, Account)

    async def deposit(command: Deposit, context: MessageContext) -> int:
        account = await context.unit_of_work.get(accounts, command.account_id)
        both[0] += 1
        if both[0] == 2:
            loaded.set()
        with anyio.fail_after(5):
            await loaded.wait()  # both load version 0 before either saves
        account.deposit(command.amount)
        return command.amount

    buses = (
        BusBuilder()
        .use(RetryBehaviour(attempts=3, base_delay=0.001), applies_to=Command)
        .use(Gate())
        .use(UnitOfWorkBehaviour(lambda ctx: UnitOfWork(store, subscribers=[published])))
        .register(deposit)
        .build()
    )
    async with anyio.create_task_group() as group:
        group.start_soon(buses.commands.send, Deposit(account_id="a", amount=5))
        group.start_soon(buses.commands.send, Deposit(account_id="a", amount=7))
    deposits = [e.data for e in await store.read_stream("account-a")][1:]
    assert sorted(d.amount for d in deposits if isinstance(d, Deposited)) == [5, 7]
    assert len(attempts) == 3  # two first attempts, one retry of the loser
    assert [t for t, stored in published.events] == ["cqrs_test.Deposited"] * 2


async def test_without_retry_the_conflict_reaches_the_caller(store: ClosableEventStore) -> None:
    accounts = Repository(store, Account)
    stale = await accounts.get("b")
    fresh = await accounts.get("b")
    fresh.deposit(1)
    await accounts.save(fresh)

    async def deposit(command: Deposit, context: MessageContext) -> None:
        context.unit_of_work.add(stale)
        stale.deposit(command.amount)

    retry = RetryBehaviour(attempts=2, base_delay=0.001)
    calls: list[int] = []

    class Count:
        async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
            calls.append(1)
            return await call_next(message, context)

    buses = (
        BusBuilder()
        .use(retry)
        .use(Count())
        .use(UnitOfWorkBehaviour(lambda ctx: UnitOfWork(store)))
        .register(deposit)
        .build()
    )
    with pytest.raises(ConcurrencyConflict):  # the stale aggregate conflicts every time
        await buses.commands.send(Deposit(account_id="b", amount=2))
    assert len(calls) == 2  # bounded: tried twice, then the error
    assert [e.stream_version for e in await store.read_stream("account-b")] == [1, 2]


class SlowDeposit(Deposit):
    timeout: ClassVar[float | None] = 0.05


async def test_a_command_over_its_timeout_is_cancelled_and_rolled_back(
    store: ClosableEventStore,
) -> None:
    published = Published(store)
    accounts = Repository(store, Account)

    async def slow(command: SlowDeposit, context: MessageContext) -> None:
        account = await context.unit_of_work.get(accounts, command.account_id)
        account.deposit(command.amount)
        await anyio.sleep(5)

    buses = (
        BusBuilder()
        .use(TimeoutBehaviour())
        .use(UnitOfWorkBehaviour(lambda ctx: UnitOfWork(store, subscribers=[published])))
        .register(slow)
        .build()
    )
    with anyio.fail_after(3), pytest.raises(MessageTimeout) as caught:
        await buses.commands.send(SlowDeposit(account_id="c", amount=1))
    assert caught.value.code == "cqrs.timeout"
    assert caught.value.seconds == 0.05
    assert [e.event_type for e in await store.read_stream("account-c")] == ["cqrs_test.Opened"]
    assert published.events == []
