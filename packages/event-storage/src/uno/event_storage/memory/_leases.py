"""Leases held in one process's memory: for tests and single-process applications."""

from __future__ import annotations

from uno.events import Lease

__all__ = ["InMemoryLeaseStore"]


class _InMemoryLease:
    """A lease of an ``InMemoryLeaseStore``."""

    def __init__(self, store: InMemoryLeaseStore, name: str) -> None:
        self._store = store
        self._name = name

    @property
    def name(self) -> str:
        """The name the lease claims."""
        return self._name

    async def check(self) -> bool:
        """Return whether the lease is still held (``False`` once released or revoked)."""
        return self._store._held.get(self._name) is self

    async def release(self) -> None:
        """Give the lease up; safe to call twice and after it was revoked."""
        if self._store._held.get(self._name) is self:
            del self._store._held[self._name]

    def __repr__(self) -> str:
        return f"<InMemoryLease {self._name!r}>"


class InMemoryLeaseStore:
    """Grants leases on names to one holder at a time, within this process.

    It coordinates tasks of one process only: two processes each get their
    own leases. A lease is lost when it is released or ``revoke``-d, and with
    the process.
    """

    def __init__(self) -> None:
        self._held: dict[str, _InMemoryLease] = {}

    async def try_acquire(self, name: str) -> Lease | None:
        """Take the lease on ``name`` if nobody holds it, else return ``None``."""
        if name in self._held:
            return None
        lease = self._held[name] = _InMemoryLease(self, name)
        return lease

    def held(self) -> list[str]:
        """Return the names leased now, sorted."""
        return sorted(self._held)

    def revoke(self, name: str) -> None:
        """Take the lease on ``name`` from its holder, as if its process had died.

        The holder's ``check()`` returns ``False`` from now on, and the name is
        free for another holder. For tests of what a holder does when it loses
        its lease.
        """
        self._held.pop(name, None)
