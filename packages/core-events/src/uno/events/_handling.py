"""Who reacts to events (handlers), hands them to a broker (publishers), or sends commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from uno.events._event import Event
from uno.events._metadata import EventMetadata, RecordedEvent

__all__ = ["COMMAND_ID_HEADER", "CommandSender", "EventHandler", "EventPublisher"]

COMMAND_ID_HEADER = "uno-command-id"
"""The metadata header that carries a command's id, for receivers to deduplicate."""


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


@runtime_checkable
class CommandSender(Protocol):
    """Sends a command to the one handler that takes it, and returns what it returned.

    Process managers send through it, at least once: when
    ``metadata.headers[COMMAND_ID_HEADER]`` is set, a command sent again
    carries the same id, and an implementer (or the command's handler)
    guarantees that handling a command id twice has the effect of handling it
    once. It raises when the command could not be handled; a refusal that the
    sender should react to is better reported as an event.
    """

    async def send(self, command: object, /, *, metadata: EventMetadata | None = None) -> object:
        """Send ``command`` with ``metadata`` (correlation, causation, command id)."""
        ...
