"""Aggregates record events, change state only by applying them, and bind appliers once."""

from __future__ import annotations

import pytest
from bank import (
    Account,
    AccountClosed,
    AccountOpened,
    InsufficientFunds,
    MoneyDeposited,
    MoneyWithdrawn,
)
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st

from uno.event_sourcing import Aggregate, InvariantViolation, UnhandledEvent, applies
from uno.event_sourcing.exceptions import HandlerDefinitionError
from uno.event_sourcing.testing import given
from uno.events import Event


class Renamed(Event):
    event_type = "test.Renamed"
    name: str


def test_recording_applies_the_event_and_keeps_it_pending() -> None:
    account = Account.open("a-1", owner="ada")
    account.deposit(30)
    assert (account.owner, account.balance, account.version, account.loaded_version) == (
        "ada",
        30,
        2,
        0,
    )
    assert [e.data for e in account.pending_events] == [
        AccountOpened(owner="ada"),
        MoneyDeposited(amount=30),
    ]
    assert account.stream_id == "account-a-1" == Account.stream_id_for("a-1")


def test_a_refused_command_records_nothing_and_changes_nothing() -> None:
    account = Account.open("a-1", owner="ada")
    with pytest.raises(InsufficientFunds, match="balance is 0") as info:
        account.withdraw(5)
    assert info.value.code == "bank.insufficient_funds"
    assert isinstance(info.value, InvariantViolation)
    assert (account.balance, account.version, len(account.pending_events)) == (0, 1, 1)


def test_replay_rebuilds_state_without_pending_events() -> None:
    account = Account("a-1")
    account.replay([AccountOpened(owner="ada"), MoneyDeposited(amount=5), MoneyWithdrawn(amount=2)])
    assert (account.balance, account.version, account.loaded_version) == (3, 3, 3)
    assert account.pending_events == ()
    assert account.applied == ["opened", "deposited", "withdrawn"]


def test_appliers_are_bound_by_annotation_or_by_decorator_argument() -> None:
    table = Account._appliers
    assert table.event_classes() == {AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed}


def test_an_event_without_an_applier_is_refused_and_not_recorded() -> None:
    account = Account.open("a-1", owner="ada")
    with pytest.raises(UnhandledEvent, match="test.Renamed") as info:
        account.record(Renamed(name="x"))
    assert info.value.code == "event_sourcing.unhandled_event"
    assert len(account.pending_events) == 1


def test_a_subclass_inherits_appliers_and_may_replace_one() -> None:
    class Audited(Account):
        @applies
        def _deposited(self, event: MoneyDeposited) -> None:
            self.balance += 2 * event.amount

    audited = Audited("x")
    audited.replay([AccountOpened(owner="o"), MoneyDeposited(amount=5)])
    assert audited.balance == 10


def test_two_appliers_for_one_event_class_are_refused() -> None:
    with pytest.raises(HandlerDefinitionError, match="two @applies methods"):

        class Twice(Aggregate):
            @applies(Renamed)
            def _one(self, event: Renamed) -> None: ...

            @applies(Renamed)
            def _two(self, event: Renamed) -> None: ...


def test_an_applier_without_an_event_annotation_is_refused() -> None:
    with pytest.raises(HandlerDefinitionError, match="not annotated with an Event"):

        class Unannotated(Aggregate):
            @applies
            def _renamed(self, event: int) -> None: ...


def test_applies_takes_only_event_classes() -> None:
    with pytest.raises(HandlerDefinitionError, match="takes Event subclasses"):
        applies(int)


def test_an_annotation_that_cannot_be_resolved_says_to_name_the_class() -> None:
    class Local(Event):
        event_type = "test.Local"

    class Early(Aggregate):
        @applies
        def _local(self, event: Local) -> None: ...

    # A string annotation naming a function's local class cannot be resolved:
    # the class is created anyway, and the first use explains the fix.
    with pytest.raises(HandlerDefinitionError, match=r"@applies\(SomeEvent\)"):
        Early("e").record(Local())


def test_categories_are_checked_when_the_class_is_created() -> None:
    with pytest.raises(HandlerDefinitionError, match="category"):

        class Bad(Aggregate):
            category = "no spaces"

    class Default(Aggregate):
        pass

    assert Default.category == "default"


def test_ids_must_be_non_empty_strings() -> None:
    with pytest.raises(ValueError, match="non-empty str"):
        Account("")


@hypothesis_given(st.lists(st.integers(min_value=1, max_value=1000), max_size=30))
def test_balance_is_the_sum_of_deposits_and_replay_agrees_with_recording(
    amounts: list[int],
) -> None:
    recorded = Account.open("p", owner="p")
    for amount in amounts:
        recorded.deposit(amount)
    replayed = Account("p")
    replayed.replay([e.data for e in recorded.pending_events])
    assert replayed.balance == recorded.balance == sum(amounts)
    assert replayed.version == recorded.version == len(amounts) + 1


def test_given_when_then_checks_recorded_events() -> None:
    account = (
        given(Account, AccountOpened(owner="ada"), MoneyDeposited(amount=10))
        .when(lambda a: a.withdraw(4))
        .then(MoneyWithdrawn(amount=4))
    )
    assert account.balance == 6


def test_given_when_then_with_a_creation_command() -> None:
    created = (
        given(Account).when(lambda _: Account.open("n", owner="bo")).then(AccountOpened(owner="bo"))
    )
    assert created.id == "n"


def test_then_raises_checks_the_error_and_that_nothing_was_recorded() -> None:
    error = (
        given(Account, AccountOpened(owner="ada"))
        .when(lambda a: a.withdraw(50))
        .then_raises(InsufficientFunds, match="balance is 0")
    )
    assert error.code == "bank.insufficient_funds"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda s: s.when(lambda a: a.withdraw(1)).then(), "raised"),
        (lambda s: s.when(lambda a: a.deposit(1)).then(), "recorded"),
        (lambda s: s.when(lambda a: a.deposit(1)).then_raises(InvariantViolation), "succeeded"),
        (lambda s: s.when(lambda a: a.withdraw(1)).then_raises(KeyError), "expected KeyError"),
        (
            lambda s: s.when(lambda a: a.withdraw(1)).then_raises(InvariantViolation, match="x{9}"),
            "match",
        ),
        (lambda s: s.then(), "call .when"),
    ],
)
def test_a_failing_scenario_explains_itself(check: object, message: str) -> None:
    scenario = given(Account, AccountOpened(owner="ada"))
    with pytest.raises(AssertionError, match=message):
        check(scenario)  # type: ignore[operator]
