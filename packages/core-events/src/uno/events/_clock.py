"""Clocks: where time comes from, so tests can control it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of the current time.

    An implementer guarantees that ``now`` returns a timezone-aware datetime in
    UTC.
    """

    def now(self) -> datetime:
        """Return the current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to, for tests.

    Args:
        start: The initial time; must be timezone-aware.
    """

    def __init__(self, start: datetime) -> None:
        self._now = _as_utc(start)

    def now(self) -> datetime:
        """Return the clock's current time."""
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta`` (never backward) and return the new time."""
        if delta < timedelta(0):
            raise ValueError(f"a clock only moves forward; got a delta of {delta}")
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment``, which must be timezone-aware and not in the clock's past."""
        moment = _as_utc(moment)
        if moment < self._now:
            raise ValueError(f"a clock only moves forward; {moment} is before {self._now}")
        self._now = moment


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive; pass a timezone-aware datetime")
    return moment.astimezone(UTC)
