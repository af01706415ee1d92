"""Leases: at most one holder per name, so that two processes never run the same work."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Lease", "LeaseStore"]


@runtime_checkable
class Lease(Protocol):
    """A held claim on a name, such as one partition of a projection.

    An implementer guarantees that while ``check()`` returns ``True`` no other
    holder has the same name, and that a holder whose process dies or loses
    its connection loses the lease without anyone calling ``release``.
    """

    @property
    def name(self) -> str:
        """The name the lease claims."""
        ...

    async def check(self) -> bool:
        """Return whether the lease is still held; once ``False``, it stays lost."""
        ...

    async def release(self) -> None:
        """Give the lease up; safe to call twice and after it was lost."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """Grants leases on names to one holder at a time."""

    async def try_acquire(self, name: str) -> Lease | None:
        """Take the lease on ``name`` if nobody holds it, else return ``None`` at once."""
        ...
