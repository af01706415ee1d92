"""Group commit's scheduling, without a database: every append settles once, alone or grouped."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.event_storage._prepared import PreparedAppend, PreparedEvent
from uno.event_storage.postgres import _append_groups
from uno.event_storage.postgres._append_groups import AppendGroups, GroupRefused
from uno.events import AppendResult


def _append(stream: str, events: int) -> PreparedAppend:
    event = PreparedEvent(None, "test.Happened", 1, b"{}", b"")
    return PreparedAppend(stream, 0, [event] * events)


class _Database:
    """Records what each transaction held; refuses a group holding a refused stream."""

    def __init__(self, refused: set[str], seed: int) -> None:
        self.refused = refused
        self.transactions: list[list[str]] = []
        self.random = random.Random(seed)

    async def alone(self, append: PreparedAppend) -> AppendResult:
        await self._wait()
        if append.stream_id in self.refused:
            raise ValueError(append.stream_id)
        return self._commit([append])[0]

    async def together(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        await self._wait()
        if any(a.stream_id in self.refused for a in appends):
            raise GroupRefused
        return self._commit(appends)

    async def _wait(self) -> None:
        for _ in range(self.random.randrange(4)):
            await asyncio.sleep(0)

    def _commit(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        self.transactions.append([a.stream_id for a in appends])
        number = len(self.transactions)
        return [
            AppendResult(
                stream_id=a.stream_id, stream_version=len(a.events), global_position=number
            )
            for a in appends
        ]


@settings(max_examples=100, deadline=None)
@given(
    lanes=st.integers(1, 3),
    plan=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 120), st.booleans()), min_size=1, max_size=40
    ),
    seed=st.integers(0, 1000),
)
def test_every_append_settles_once_and_groups_keep_their_limits(
    lanes: int, plan: list[tuple[int, int, bool]], seed: int
) -> None:
    """Writers in a loop, some refused: each gets its own outcome; groups hold a stream once."""
    refused = {f"s{stream}" for stream, _, bad in plan if bad}
    database = _Database(refused, seed)
    groups = AppendGroups(lanes, database.alone, database.together)

    async def run() -> list[AppendResult | BaseException]:
        async def one(stream: str, events: int) -> AppendResult:
            await asyncio.sleep(0)
            return await groups.append(_append(stream, events))

        outcomes = await asyncio.gather(
            *(one(f"s{stream}", min(events, _append_groups.LARGEST)) for stream, events, _ in plan),
            return_exceptions=True,
        )
        await groups.drain()
        return outcomes

    outcomes = asyncio.run(run())
    for (stream, _, _), outcome in zip(plan, outcomes, strict=True):
        if f"s{stream}" in refused:
            assert isinstance(outcome, ValueError)
            assert outcome.args == (f"s{stream}",)
        else:
            assert isinstance(outcome, AppendResult)
            assert outcome.stream_id == f"s{stream}"
            assert f"s{stream}" in database.transactions[outcome.global_position - 1]
    committed = [s for transaction in database.transactions for s in transaction]
    assert sorted(committed) == sorted(f"s{s}" for s, _, _ in plan if f"s{s}" not in refused)
    for transaction in database.transactions:
        assert len(set(transaction)) == len(transaction)
        assert len(transaction) <= _append_groups.MOST_APPENDS
    assert groups._busy == 0
    assert groups._waiting == []


@pytest.mark.anyio
async def test_an_error_of_the_shared_transaction_is_every_members() -> None:
    """A failure that is not a refusal (a lost link, say) reaches every append of the group."""

    async def alone(append: PreparedAppend) -> AppendResult:
        await asyncio.sleep(0)
        return AppendResult(stream_id=append.stream_id, stream_version=1, global_position=1)

    async def together(appends: list[PreparedAppend]) -> list[AppendResult]:
        raise ConnectionError("gone")

    groups = AppendGroups(1, alone, together)
    outcomes = await asyncio.gather(
        *(groups.append(_append(f"s{n}", 1)) for n in range(4)), return_exceptions=True
    )
    assert isinstance(outcomes[0], AppendResult)
    assert [type(o) for o in outcomes[1:]] == [ConnectionError] * 3
    await groups.drain()
