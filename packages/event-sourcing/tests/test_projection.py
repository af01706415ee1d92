"""Projection classes: handlers bound once, event type names, dispatch, and their checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from ledger import Balances, Credited, Debited, Noted

from uno.event_sourcing import Projection, TransactionalProjection, handles
from uno.event_sourcing.exceptions import HandlerDefinitionError, ProjectionConfigurationError
from uno.events import Event, RecordedEvent, StoreTransaction

pytestmark = pytest.mark.anyio


def recorded(data: Event, stream_id: str = "acct-1", position: int = 1) -> RecordedEvent[Event]:
    return RecordedEvent(
        event_id=uuid.uuid4(),
        stream_id=stream_id,
        stream_version=position,
        global_position=position,
        recorded_at=datetime.now(UTC),
        event_type=type(data).event_type,
        event_version=1,
        data=data,
    )


def test_event_types_are_the_type_names_of_the_handled_classes() -> None:
    assert Balances.event_types() == {"ledger.Credited", "ledger.Debited"}
    assert Balances.projection_name() == "balances"


def test_handles_takes_several_classes_at_once() -> None:
    class Movements(Projection):
        name = "movements"

        @handles(Credited, Debited)
        async def moved(self, event: RecordedEvent[Event]) -> None: ...

    assert Movements.event_types() == {"ledger.Credited", "ledger.Debited"}


async def test_apply_dispatches_by_class_and_says_whether_a_handler_took_the_event() -> None:
    balances = Balances()
    assert await balances.apply(recorded(Credited(amount=5)))
    assert await balances.apply(recorded(Debited(amount=2)))
    assert not await balances.apply(recorded(Noted(text="ignored")))
    assert balances.balances == {"acct-1": 3}
    assert balances.handles_event(recorded(Credited(amount=1)))
    assert not balances.handles_event(recorded(Noted(text="x")))


async def test_a_transactional_projection_takes_the_transaction_as_second_argument() -> None:
    seen: list[tuple[int, object]] = []

    class Inline(TransactionalProjection):
        name = "inline"

        @handles
        async def credited(self, event: RecordedEvent[Credited], tx: StoreTransaction) -> None:
            seen.append((event.data.amount, tx))

    marker = object()
    assert await Inline().apply(recorded(Credited(amount=4)), marker)  # type: ignore[arg-type]
    assert seen == [(4, marker)]


async def test_reset_must_be_overridden_to_rebuild() -> None:
    class Plain(Projection):
        name = "plain"

    with pytest.raises(ProjectionConfigurationError, match="override"):
        await Plain().reset()


def test_a_handler_without_an_event_annotation_is_refused() -> None:
    with pytest.raises(HandlerDefinitionError):

        class Broken(Projection):
            name = "broken"

            @handles
            async def what(self, event: int) -> None: ...
