"""What a projection runner does when a handler raises: stop, retry, or skip and park."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TypeAlias

from uno.event_sourcing.exceptions import ProjectionConfigurationError

__all__ = ["FailurePolicy", "Retry", "Skip", "Stop"]


@dataclass(frozen=True)
class Stop:
    """Stop the projection at the failing event; its status becomes ``failed``.

    The checkpoint stays before the event, so a restart (or a fix and a new
    runner) tries it again. Other projections of the runner go on.
    """


@dataclass(frozen=True)
class Skip:
    """Park the failing event and go on with the next one.

    The event is recorded durably (``runner.parked(name)``) and can be run
    again with ``runner.replay_parked(name)`` once the handler is fixed.
    """


@dataclass(frozen=True)
class Retry:
    """Try the event again with exponential backoff, then fall back to ``then``.

    Args:
        max_attempts: Tries in all, the first included.
        initial_backoff: Seconds before the second try; doubled for each next one.
        max_backoff: Longest wait between tries, in seconds.
        jitter: Fraction of each wait drawn at random (0 waits exactly).
        then: What to do when the last try fails: ``Stop()`` or ``Skip()``.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: float = 0.1
    then: Stop | Skip = field(default_factory=Stop)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ProjectionConfigurationError(
                f"Retry.max_attempts must be >= 1, got {self.max_attempts}"
            )
        if self.initial_backoff < 0 or self.max_backoff < 0 or not 0 <= self.jitter <= 1:
            raise ProjectionConfigurationError(
                "Retry needs initial_backoff >= 0, max_backoff >= 0 and 0 <= jitter <= 1"
            )
        if not isinstance(self.then, Stop | Skip):
            raise ProjectionConfigurationError(
                f"Retry.then must be Stop() or Skip(), got {self.then!r}"
            )

    def backoff(self, attempt: int) -> float:
        """Return the seconds to wait after failed try number ``attempt`` (from 1)."""
        wait = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return float(wait * (1 - self.jitter * random.random()))  # noqa: S311 - not for security


FailurePolicy: TypeAlias = Stop | Retry | Skip
"""``Stop()``, ``Retry(...)`` or ``Skip()``."""
