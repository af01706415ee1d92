"""The contract every lease store keeps, whatever holds its leases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from uno.events import Lease, LeaseStore

__all__ = ["LeaseStoreContract", "NewHolder"]

NewHolder = Callable[[], LeaseStore]
"""Return a lease store that competes for names with every other the fixture returned."""


@pytest.mark.anyio
class LeaseStoreContract:
    """The contract every lease store keeps. Subclass it and provide ``new_holder``.

    ``new_holder`` is a fixture that returns a function; each call returns a
    lease store that contends for the same names as the others (a new
    holder where the backend has holders, such as ``store.lease_store()``
    on SQLite or PostgreSQL; the same store where it has none, as in
    memory). A backend that can take a lease from its holder behind its
    back, as its holder's death would, overrides ``lose`` as well::

        class TestMyLeases(LeaseStoreContract):
            @pytest.fixture
            def new_holder(self, store):
                return store.lease_store
    """

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run the kit on asyncio (override to add trio where the backend allows)."""
        return "asyncio"

    @pytest.fixture
    def lose(self) -> Callable[[Lease], Awaitable[None]]:
        """Return what takes a held lease away from its holder, as the holder's death would."""

        async def cannot(lease: Lease) -> None:
            pytest.skip("this backend offers no way to lose a lease behind its holder's back")

        return cannot

    async def test_a_lease_has_one_holder_until_released(self, new_holder: NewHolder) -> None:
        one, two = new_holder(), new_holder()
        assert isinstance(one, LeaseStore)
        lease = await one.try_acquire("projection-1")
        assert isinstance(lease, Lease)
        assert lease.name == "projection-1"
        assert await two.try_acquire("projection-1") is None
        assert await one.try_acquire("projection-1") is None  # one holder, even in one store
        assert await lease.check()
        await lease.release()
        await lease.release()
        assert not await lease.check()
        successor = await two.try_acquire("projection-1")
        assert successor is not None
        assert await successor.check()
        await successor.release()

    async def test_an_old_holders_release_does_not_free_its_successors_lease(
        self, new_holder: NewHolder
    ) -> None:
        one, two, three = new_holder(), new_holder(), new_holder()
        lease = await one.try_acquire("p")
        assert lease is not None
        await lease.release()
        successor = await two.try_acquire("p")
        assert successor is not None
        await lease.release()
        assert not await lease.check()
        assert await successor.check()
        assert await three.try_acquire("p") is None
        await successor.release()

    async def test_names_are_leased_apart(self, new_holder: NewHolder) -> None:
        one, two = new_holder(), new_holder()
        first = await one.try_acquire("a")
        second = await two.try_acquire("b")
        assert first is not None
        assert second is not None
        assert await first.check()
        assert await second.check()
        await first.release()
        assert await second.check()
        await second.release()

    async def test_of_holders_racing_for_a_name_exactly_one_wins(
        self, new_holder: NewHolder
    ) -> None:
        holders = [new_holder() for _ in range(6)]
        won: list[Lease] = []

        async def race(holder: LeaseStore) -> None:
            lease = await holder.try_acquire("contested")
            if lease is not None:
                won.append(lease)

        async with anyio.create_task_group() as tasks:
            for holder in holders:
                tasks.start_soon(race, holder)
        assert len(won) == 1
        assert await won[0].check()
        await won[0].release()

    async def test_a_lost_lease_stays_lost_and_its_name_is_free_again(
        self, new_holder: NewHolder, lose: Callable[[Lease], Awaitable[None]]
    ) -> None:
        one, two = new_holder(), new_holder()
        lease = await one.try_acquire("p")
        assert lease is not None
        await lose(lease)
        with anyio.fail_after(10):
            while await lease.check():
                await anyio.sleep(0.02)
        assert not await lease.check()
        with anyio.fail_after(10):
            successor = await two.try_acquire("p")
            while successor is None:
                await anyio.sleep(0.02)
                successor = await two.try_acquire("p")
        assert not await lease.check()  # lost for good
        await lease.release()  # harmless after the loss
        assert await successor.check()
        await successor.release()
