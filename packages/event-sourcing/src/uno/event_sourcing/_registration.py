"""The events uno.event_sourcing itself stores, and registering them in a registry."""

from __future__ import annotations

from uno.event_sourcing._deadlines import DEADLINE_EVENTS
from uno.event_sourcing._parking import ProjectionEventParked
from uno.event_sourcing._process_manager import PROCESS_EVENTS
from uno.event_sourcing._snapshots import AggregateSnapshot
from uno.events import Event, EventRegistry

__all__ = ["INTERNAL_EVENTS", "register_types"]

INTERNAL_EVENTS: tuple[type[Event], ...] = (
    AggregateSnapshot,
    ProjectionEventParked,
    *PROCESS_EVENTS,
    *DEADLINE_EVENTS,
)


def register_types(registry: EventRegistry) -> EventRegistry:
    """Register the events uno.event_sourcing stores in ``registry``.

    They are aggregate snapshots, parked projection events, and the process
    managers' own events and deadlines.

    Call it once on the registry you give the event store; registering twice
    is harmless. Returns the registry.
    """
    for cls in INTERNAL_EVENTS:
        if registry.get(cls.event_type, cls.event_version) is not cls:
            registry.register(cls)
    return registry
