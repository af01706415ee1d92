"""Who reacts to events: handlers, and publishers that hand events to a broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from uno.events._event import Event
from uno.events._metadata import RecordedEvent

__all__ = ["EventHandler", "EventPublisher"]


@runtime_checkable
class EventHandler(Protocol):
    """Reacts to one recorded event; any ``async def handler(event)`` qualifies.

    Delivery is at least once, so an implementer guarantees that handling the
    same event (same ``event_id``) twice has the effect of handling it once,
    and raises to signal failure (the caller retries or dead-letters).
    """

    async def __call__(self, event: RecordedEvent[Event], /) -> None:
        """Handle ``event``."""
        ...


@runtime_checkable
class EventPublisher(Protocol):
    """Publishes recorded events to consumers outside the process (a broker).

    An implementer guarantees that when ``publish`` returns, the broker has
    accepted every event; that it passes ``event_id`` as the broker's
    deduplication key, so a republished event is delivered once; that events of
    one stream are published in the order given; and that trace context in the
    metadata travels in message headers.
    """

    async def publish(self, events: Sequence[RecordedEvent[Event]]) -> None:
        """Publish ``events`` in order."""
        ...
