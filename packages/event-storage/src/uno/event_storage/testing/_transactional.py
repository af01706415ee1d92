"""The contract of stores whose appends can join a transaction."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from uno.event_storage.testing._arguments import TransactionalArgumentContract
from uno.event_storage.testing._concurrency import run_concurrent_writers
from uno.event_storage.testing._fixtures import (
    AccountOpened,
    AccountSnapshot,
    Rollback,
    TransactionalStore,
    all_events,
    deposits,
)
from uno.events import (
    NO_STREAM,
    Snapshot,
)

__all__ = ["TransactionalStoreContract"]


@pytest.mark.anyio
class TransactionalStoreContract(TransactionalArgumentContract):
    """The contract of stores whose appends can join a transaction (``transaction()``).

    Subclass it next to ``EventStoreContract`` with the same ``store`` fixture.
    """

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run the kit on asyncio."""
        return "asyncio"

    async def test_a_rolled_back_transaction_leaves_nothing(
        self, store: TransactionalStore
    ) -> None:
        plain: Any = store
        with pytest.raises(Rollback):
            async with store.transaction() as tx:
                await tx.append("s", deposits(2))
                await tx.append("t", deposits(1))
                assert [e.stream_version for e in await tx.read_stream("s")] == [1, 2]
                raise Rollback
        assert await all_events(plain) == []
        async with store.transaction() as tx:
            await tx.append("s", deposits(2))
            await tx.append("t", deposits(1))
        assert len(await all_events(plain)) == 3

    async def test_a_checkpoint_commits_with_the_events_or_not_at_all(
        self, store: TransactionalStore
    ) -> None:
        plain: Any = store
        with pytest.raises(Rollback):
            async with store.transaction() as tx:
                await tx.append("s", deposits(1))
                await tx.save_checkpoint("projector", 1)  # type: ignore[attr-defined]
                raise Rollback
        assert await plain.load_checkpoint("projector") is None
        async with store.transaction() as tx:
            result = await tx.append("s", deposits(1))
            await tx.save_checkpoint("projector", result.global_position)  # type: ignore[attr-defined]
        assert await plain.load_checkpoint("projector") == result.global_position

    async def test_readers_outside_see_a_transaction_only_once_it_commits(
        self, store: TransactionalStore
    ) -> None:
        plain: Any = store
        await plain.append("s", deposits(1))
        before = await plain.log_position()
        async with store.transaction() as tx:
            result = await tx.append("s", deposits(2, 10))
            await tx.append("t", [AccountOpened(owner="ada")])
            assert [e.stream_version for e in await tx.read_stream("s")] == [1, 2, 3]
            assert await plain.stream_version("s") == 1
            assert await plain.stream_version("t") is None
            assert [e.stream_version for e in await plain.read_stream("s")] == [1]
            assert len(await all_events(plain)) == 1
            assert await plain.log_position() == before
            assert await plain.count_events() == 1
        assert await plain.stream_version("s") == 3
        assert await plain.count_events() == 4
        assert await plain.count_events(after=before, stream_prefix="s") == 2
        assert await plain.log_position() >= result.global_position

    async def test_metadata_snapshots_and_checkpoints_of_a_rolled_back_transaction_vanish(
        self, store: TransactionalStore
    ) -> None:
        plain: Any = store
        await plain.append("s", deposits(2))
        await plain.set_stream_metadata("s", {"owner": "ops"})
        await plain.save_checkpoint("projector", 1)
        with pytest.raises(Rollback):
            async with store.transaction() as tx:
                bound: Any = tx
                await bound.set_stream_metadata("s", {"owner": "dev"})
                await bound.save_snapshot(
                    Snapshot(stream_id="s", stream_version=2, state=AccountSnapshot(balance=3))
                )
                await bound.save_checkpoint("projector", 2)
                await bound.save_checkpoint("relay", 2)
                assert await bound.get_stream_metadata("s") == {"owner": "dev"}
                assert (await bound.load_snapshot("s")).stream_version == 2
                assert await bound.load_checkpoint("projector") == 2
                raise Rollback
        assert await plain.get_stream_metadata("s") == {"owner": "ops"}
        assert await plain.load_snapshot("s") is None
        assert await plain.load_checkpoint("projector") == 1
        assert await plain.load_checkpoint("relay") is None

    async def test_a_cancelled_transaction_leaves_nothing(self, store: TransactionalStore) -> None:
        plain: Any = store
        appended = anyio.Event()

        async def write_then_wait() -> None:
            async with store.transaction() as tx:
                await tx.append("s", deposits(2))
                await tx.save_checkpoint("projector", 2)  # type: ignore[attr-defined]
                appended.set()
                await anyio.sleep_forever()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(write_then_wait)
                await appended.wait()
                tasks.cancel_scope.cancel()
            assert await all_events(plain) == []
            assert await plain.load_checkpoint("projector") is None
            await plain.append("s", deposits(1), expected_version=NO_STREAM)
        assert [e.stream_version for e in await plain.read_stream("s")] == [1]

    async def test_writers_with_rollbacks_and_subscribers_agree_on_the_log(
        self, store: TransactionalStore
    ) -> None:
        plain: Any = store
        report = await run_concurrent_writers(plain, writers=16, appends_per_writer=10, seed=2)
        assert report.rolled_back, "no transaction was rolled back"
        report.check()
