"""Service addresses for the tests, and what to do when a service is down."""

from uno.event_storage.testing import postgres_url

__all__ = ["postgres_url"]
