"""Subscriptions: catch up on the global log, then follow it as events commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio

from uno.events import Event, RecordedEvent

if TYPE_CHECKING:
    from uno.event_storage._base import EventStoreBase

__all__ = ["Notifier", "PollingSubscription"]


class Notifier:
    """Wakes waiters when new events may exist.

    A reader takes a ``ticket`` before it looks for events and waits on that
    ticket afterwards, so a notification that arrives while it reads is not
    lost: the ticket is already set and the wait returns at once.
    """

    def __init__(self) -> None:
        self._event: anyio.Event | None = None  # made when someone takes a ticket
        self.closed = False

    @property
    def ticket(self) -> anyio.Event:
        """The event the next notification sets."""
        event = self._event
        if event is None:
            event = self._event = anyio.Event()
            if self.closed:
                event.set()
        return event

    def notify(self) -> None:
        """Set the current ticket; later tickets wait for the next notification.

        When nobody took a ticket since the last notification, there is nobody
        to wake and nothing to do: the common case of an append.
        """
        event = self._event
        if event is not None and not self.closed:
            self._event = None
            event.set()

    async def wait(self, ticket: anyio.Event, max_wait: float) -> None:
        """Return when ``ticket`` is set, or after ``max_wait`` seconds."""
        if self.closed:
            return
        with anyio.move_on_after(max_wait):
            await ticket.wait()

    def close(self) -> None:
        """Wake every waiter for good: this ticket and every later one is set."""
        self.closed = True
        if self._event is not None:
            self._event.set()


class PollingSubscription:
    """Reads the global log in batches after a position, then waits for more.

    It never skips an event: each batch continues exactly where the store said
    the previous one ended, and the store only reports what is safe to read
    (on PostgreSQL, nothing a still-open transaction may yet add before).
    The filters (event types, stream prefix) are the store's, as in ``read_all``.
    A row that does not decode ends the iteration with the error (which names
    its position) after every event before it was yielded; ``position`` is
    then the last good event's, and ``read_all_raw`` reads the bad one.
    """

    def __init__(
        self,
        store: EventStoreBase,
        *,
        after: int,
        batch_size: int,
        event_types: tuple[str, ...] | None = None,
        stream_prefix: str | None = None,
    ) -> None:
        self._store = store
        self._after = after
        self._batch_size = batch_size
        self._event_types = event_types
        self._stream_prefix = stream_prefix
        self._closed = False
        self._iterating = False

    @property
    def position(self) -> int:
        """How far the log was read: the last event yielded, or past the events filtered out.

        Every event up to it that passes the filters has been yielded.
        """
        return self._after

    def __aiter__(self) -> AsyncIterator[RecordedEvent[Event]]:
        if self._iterating:
            raise RuntimeError("a subscription can be iterated once; subscribe again instead")
        self._iterating = True
        return self._follow()

    async def _follow(self) -> AsyncIterator[RecordedEvent[Event]]:
        store = self._store
        filtered = self._event_types is not None or self._stream_prefix is not None
        while not self._stopping():
            ticket = store._notifier.ticket
            # Filtered, the rows may stop short of the log's end; taken before the
            # read, the end is one the read covers, so ``position`` may move to it.
            end = await store._log_position() if filtered else 0
            rows, scanned_to = await store._read_all(
                self._after, self._batch_size, self._event_types, self._stream_prefix
            )
            for events in store._decode_chunks(rows):
                for event in events:
                    if self._stopping():  # closed while the consumer handled an event
                        return
                    self._after = event.global_position
                    yield event
            if scanned_to is not None:
                self._after = max(self._after, scanned_to)
                continue
            self._after = max(self._after, end)
            await store._wait_for_events(ticket, store.poll_interval)

    def _stopping(self) -> bool:
        return self._closed or self._store._notifier.closed

    async def aclose(self) -> None:
        """Stop following the log; the iteration ends at its next step."""
        self._closed = True
        self._store._notifier.notify()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
