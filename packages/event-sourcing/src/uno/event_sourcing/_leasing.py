"""Leased work: what the runners share to run work only while they hold a lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from uno.events import LeaseStore

__all__ = ["StoppableTask", "lease_store_of", "stop_task_group"]


def lease_store_of(store: object) -> LeaseStore | None:
    """Return the store's ``lease_store()``, or ``None`` when it offers none."""
    provider = getattr(store, "lease_store", None)
    leases = provider() if callable(provider) else None
    return leases if isinstance(leases, LeaseStore) else None


async def stop_task_group(group: TaskGroup) -> None:
    """Cancel every task of a runner's background ``group`` and wait for them to end.

    The group is left without the caller's exception, so that an error of the
    ``async with`` block propagates as itself, not inside an exception group.
    """
    group.cancel_scope.cancel()
    await group.__aexit__(None, None, None)


class StoppableTask:
    """One task of a task group that can be stopped alone, and waited for until it ended."""

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()

    def start(self, group: TaskGroup, work: Callable[[], Awaitable[object]], *, name: str) -> None:
        """Run ``work`` in ``group`` until it returns or ``stop`` is called."""

        async def run() -> None:
            try:
                with self.scope:
                    await work()
            finally:
                self.done.set()

        group.start_soon(run, name=name)

    async def stop(self) -> None:
        """Cancel the work and return once it has ended."""
        self.scope.cancel()
        await self.done.wait()
