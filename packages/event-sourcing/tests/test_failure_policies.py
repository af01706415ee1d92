"""What the runner does when a handler raises: stop, retry with backoff, or skip and park."""

from __future__ import annotations

import anyio
import pytest
from ledger import Balances, Credited, Debited, StoreOpener

from uno.event_sourcing import (
    Projection,
    ProjectionFailed,
    ProjectionRunner,
    ProjectionState,
    Retry,
    Skip,
    Stop,
    handles,
)
from uno.event_sourcing.exceptions import ProjectionConfigurationError
from uno.events import RecordedEvent

pytestmark = pytest.mark.anyio


class Picky(Balances):
    """Balances that refuse amounts in ``bad`` (until ``fixed``), failing ``failures`` times."""

    name = "picky"

    def __init__(self, bad: set[int], failures: int = 10**9) -> None:
        super().__init__()
        self.bad = bad
        self.failures = failures
        self.attempts = 0

    @handles
    async def credited(self, event: RecordedEvent[Credited]) -> None:
        if event.data.amount in self.bad and self.failures > 0:
            self.attempts += 1
            self.failures -= 1
            raise ValueError(f"cannot take {event.data.amount}")
        await super().credited(event)


async def test_stop_fails_the_projection_at_the_event_and_keeps_the_checkpoint_before_it(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1)])
        before = await store.log_position()
        await store.append("acct-1", [Credited(amount=13), Credited(amount=2)])
        picky = Picky({13})
        async with ProjectionRunner(store, [picky], policy=Stop()) as runner:
            with pytest.raises(ProjectionFailed) as caught:
                await runner.wait_until_caught_up(timeout=10)
            assert isinstance(caught.value.__cause__, ValueError)
            assert caught.value.code == "event_sourcing.projection_failed"
            status = (await runner.status())["picky"]
            assert status.state is ProjectionState.FAILED
            assert status.error is caught.value
            assert status.lag_events == 2
        assert dict(picky.balances) == {"acct-1": 1}
        assert await store.load_checkpoint("picky") == before


async def test_retry_tries_again_with_backoff_and_applies_the_event_once(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=13), Credited(amount=2)])
        picky = Picky({13}, failures=2)
        policy = Retry(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
        async with ProjectionRunner(store, [picky], policy=policy) as runner:
            await runner.wait_until_caught_up(timeout=10)
        assert picky.attempts == 2
        assert dict(picky.balances) == {"acct-1": 15}
        assert set(picky.applied.values()) == {1}


async def test_retry_then_stop_fails_after_the_last_attempt(open_store: StoreOpener) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=13)])
        picky = Picky({13})
        policy = Retry(max_attempts=3, initial_backoff=0.0, then=Stop())
        async with ProjectionRunner(store, [picky], policy=policy) as runner:
            with pytest.raises(ProjectionFailed):
                await runner.wait_until_caught_up(timeout=10)
        assert picky.attempts == 3


async def test_skip_parks_the_event_durably_and_replay_parked_applies_it_later(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=1), Credited(amount=13)])
        await store.append("acct-2", [Credited(amount=13), Debited(amount=4)])
        picky = Picky({13})
        policy = Retry(max_attempts=2, initial_backoff=0.0, then=Skip())
        async with ProjectionRunner(store, [picky], policy=policy) as runner:
            await runner.wait_until_caught_up(timeout=10)
            assert dict(picky.balances) == {"acct-1": 1, "acct-2": -4}
            parked = await runner.parked("picky")
            assert [(p.stream_id, p.stream_version) for p in parked] == [
                ("acct-1", 2),
                ("acct-2", 1),
            ]
            assert parked[0].projection == "picky"
            assert parked[0].parked_event_type == "ledger.Credited"
            assert parked[0].error == "ValueError: cannot take 13"
            assert (await runner.status())["picky"].lag_events == 0  # skipped, not stuck

            result = await runner.replay_parked("picky")  # still broken: parked again
            assert (result.replayed, result.parked_again) == (0, 2)
            assert len(await runner.parked("picky")) == 2

            picky.bad.clear()  # the handler is fixed
            result = await runner.replay_parked("picky")
            assert (result.replayed, result.parked_again) == (2, 0)
            assert await runner.parked("picky") == []
            assert dict(picky.balances) == {"acct-1": 14, "acct-2": 9}


async def test_a_policy_per_projection_overrides_the_default(open_store: StoreOpener) -> None:
    class Strict(Picky):
        name = "strict"

    async with open_store() as store:
        await store.append("acct-1", [Credited(amount=13), Credited(amount=1)])
        lenient, strict = Picky({13}), Strict({13})
        async with ProjectionRunner(
            store, [lenient, strict], policy=Skip(), policies={"strict": Stop()}
        ) as runner:
            with pytest.raises(ProjectionFailed):
                await runner.wait_until_caught_up(timeout=10)
            with anyio.fail_after(5):  # the lenient one goes on past the event it parks
                while (await runner.status())["picky"].state is not ProjectionState.CAUGHT_UP:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            states = {name: s.state for name, s in (await runner.status()).items()}
        assert states == {"picky": ProjectionState.CAUGHT_UP, "strict": ProjectionState.FAILED}
        assert dict(lenient.balances) == {"acct-1": 1}


def test_policies_and_runner_options_are_checked() -> None:
    with pytest.raises(ProjectionConfigurationError):
        Retry(max_attempts=0)
    with pytest.raises(ProjectionConfigurationError):
        Retry(then=Retry())  # type: ignore[arg-type]
    backoffs = [Retry(initial_backoff=1, max_backoff=3, jitter=0).backoff(n) for n in (1, 2, 3, 4)]
    assert backoffs == [1, 2, 3, 3]


async def test_a_projection_without_a_name_or_with_a_duplicate_name_is_refused() -> None:
    from ledger import ledger_registry  # noqa: PLC0415

    from uno.event_storage import open_event_store  # noqa: PLC0415

    class Nameless(Projection):
        @handles
        async def credited(self, event: RecordedEvent[Credited]) -> None: ...

    async with open_event_store("memory://", registry=ledger_registry()) as store:
        with pytest.raises(ProjectionConfigurationError, match="has no name"):
            ProjectionRunner(store, [Nameless()])
        with pytest.raises(ProjectionConfigurationError, match="two projections"):
            ProjectionRunner(store, [Balances(), Balances()])
        with pytest.raises(ProjectionConfigurationError, match="batch_size"):
            ProjectionRunner(store, [Balances()], batch_size=0)
