"""Process managers (sagas): event-sourced coordinators that react to events with commands.

A process manager is an aggregate with its own stream. Its ``@handles``
methods receive events of other streams, record the manager's own events,
and ask for commands (``send``) and deadlines (``schedule``). A
``ProcessManagerRunner`` saves the recorded events first and sends the
commands afterwards, so sending is at least once: every command carries a
deterministic id (``COMMAND_ID_HEADER``) that receivers use to deduplicate.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from uno.event_sourcing._aggregate import Aggregate, applies
from uno.event_sourcing._deadlines import (
    DeadlineCancelled,
    DeadlineReached,
    DeadlineScheduled,
    reached_event_id,
)
from uno.event_sourcing._handlers import HandlerTable
from uno.event_sourcing.exceptions import HandlerDefinitionError, ProcessEnded
from uno.events import (
    COMMAND_ID_HEADER,
    Clock,
    Event,
    EventMetadata,
    RecordedEvent,
    SystemClock,
    uuid7,
)

__all__ = [
    "PROCESS_EVENTS",
    "OutgoingCommand",
    "ProcessCommandsSent",
    "ProcessCompleted",
    "ProcessEventHandled",
    "ProcessFailed",
    "ProcessManager",
    "on_deadline",
    "starts",
]

F = TypeVar("F", bound=Callable[..., Any])

_STARTS = "__uno_starts__"
_ON_DEADLINE = "__uno_on_deadline__"
_COMMAND_NAMESPACE = uuid.UUID("0b9f5b52-8f51-4d8c-9d1e-52f1b1a3c7a4")

ProcessStatus = Literal["active", "completed", "failed"]


class ProcessEventHandled(Event):
    """A process manager handled an event (or a reached deadline); recorded after its effects.

    Attributes:
        event_id: The handled event's id.
        global_position: Its global position: later deliveries at or before
            it are ignored.
        version_before: The manager's version before handling it, to decide
            the same commands again if they must be resent.
        commands: How many commands the handling asked to send.
    """

    event_type = "uno.ProcessEventHandled"

    event_id: str
    global_position: int
    version_before: int
    commands: int = 0


class ProcessCommandsSent(Event):
    """The commands asked for while handling ``event_id`` were all sent."""

    event_type = "uno.ProcessCommandsSent"

    event_id: str


class ProcessCompleted(Event):
    """The process ended normally; ``outcome`` says how (``"completed"``, ``"compensated"``...)."""

    event_type = "uno.ProcessCompleted"

    outcome: str = "completed"


class ProcessFailed(Event):
    """The process ended without reaching its goal."""

    event_type = "uno.ProcessFailed"

    reason: str


PROCESS_EVENTS: tuple[type[Event], ...] = (
    ProcessEventHandled,
    ProcessCommandsSent,
    ProcessCompleted,
    ProcessFailed,
)


def starts(fn: F, /) -> F:
    """Mark a ``@handles`` method as one that may start a new process.

    An event whose handler is not marked ``@starts`` is ignored when no
    process with its correlation id exists yet.
    """
    setattr(fn, _STARTS, True)
    return fn


def on_deadline(name: str, /) -> Callable[[F], F]:
    """Mark a method as the handler of the deadline ``name``.

    It receives the ``DeadlineReached`` event and, like a ``@handles``
    method, records events and sends commands. It runs once per scheduled
    deadline, and not at all if the deadline was cancelled first.
    """
    given: object = name
    if not isinstance(given, str) or not given:
        raise HandlerDefinitionError(
            f"@on_deadline takes the deadline's name, a non-empty str: got {name!r}"
        )

    def decorate(fn: F) -> F:
        setattr(fn, _ON_DEADLINE, name)
        return fn

    return decorate


@dataclass(frozen=True)
class OutgoingCommand:
    """A command a process manager asked to send, with its deterministic id and metadata."""

    command: object
    command_id: str
    metadata: EventMetadata


class ProcessManager(Aggregate):
    """A long-running process that reacts to events, keeps state as events, and sends commands.

    Subclass it like an aggregate (own events, ``@applies`` methods), then add
    ``@handles`` methods for the events it reacts to; they take the
    ``RecordedEvent``. ``correlation_key`` names the attribute of the events'
    data that holds the process id (override ``correlate`` for anything
    else); ``@starts`` marks the handlers that may create a process::

        class TransferProcess(ProcessManager):
            category = "transfer"
            correlation_key = "transfer_id"

            @starts
            @handles
            def requested(self, event: RecordedEvent[TransferRequested]) -> None:
                self.record(TransferStarted(...))
                self.send(Debit(...))

            @on_deadline("credit-timeout")
            def timed_out(self, deadline: DeadlineReached) -> None:
                self.send(Refund(...))
                self.complete("compensated")

    Handlers decide only: they must not do I/O, and given the same state and
    event they must ask for the same commands (they may run again, on a
    fresh copy, to resend commands after a crash). ``now()`` is the runner's clock.

    Class attributes:
        correlation_key: Attribute of an event's data holding the process id.
    """

    correlation_key: ClassVar[str | None] = None
    _reactions: ClassVar[HandlerTable]
    _deadline_handlers: ClassVar[dict[str, Callable[..., Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._reactions = HandlerTable(cls, "handles")
        handlers: dict[str, Callable[..., Any]] = {}
        for base in reversed(cls.__mro__):
            for attr, member in vars(base).items():
                name = getattr(member, _ON_DEADLINE, None)
                if name is None:
                    continue
                other = handlers.get(name)
                if other is not None and other.__name__ != attr:
                    raise HandlerDefinitionError(
                        f"{cls.__qualname__} has two @on_deadline({name!r}) methods: "
                        f"{other.__name__} and {attr}; keep one"
                    )
                handlers[name] = member
        cls._deadline_handlers = handlers

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.clock: Clock = SystemClock()
        self._status: ProcessStatus = "active"
        self._outcome: str | None = None
        self._position = 0
        self._unsent: dict[str, int] = {}
        self._deadlines: dict[str, DeadlineScheduled] = {}
        self._reached: set[str] = set()
        self._trigger: RecordedEvent[Event] | None = None
        self._outbox: list[OutgoingCommand] = []

    # -- routing (class level) -------------------------------------------------

    @classmethod
    def correlate(cls, event: RecordedEvent[Event]) -> str | None:
        """Return the id of the process ``event`` belongs to, or ``None`` to ignore it.

        The default reads ``correlation_key`` from the event's data.
        """
        key = cls.correlation_key
        if key is None:
            raise HandlerDefinitionError(
                f"{cls.__qualname__} cannot tell which process an event belongs to: set "
                "correlation_key = 'some_id' or override the correlate classmethod"
            )
        value = getattr(event.data, key, None)
        return None if value is None else str(value)

    @classmethod
    def reacts_to(cls, event_class: type[Event]) -> bool:
        """Return whether a ``@handles`` method takes ``event_class``."""
        return cls._reactions.get(event_class) is not None

    @classmethod
    def starts_with(cls, event_class: type[Event]) -> bool:
        """Return whether an event of ``event_class`` may start a new process."""
        fn = cls._reactions.get(event_class)
        return fn is not None and getattr(fn, _STARTS, False) is True

    @classmethod
    def reacted_event_types(cls) -> frozenset[type[Event]]:
        """Return the event classes the ``@handles`` methods name."""
        return cls._reactions.event_classes()

    # -- state -----------------------------------------------------------------

    @property
    def status(self) -> ProcessStatus:
        """``"active"``, ``"completed"`` or ``"failed"``."""
        return self._status

    @property
    def outcome(self) -> str | None:
        """How the process ended: ``complete``'s outcome or ``fail``'s reason."""
        return self._outcome

    @property
    def is_ended(self) -> bool:
        """Whether the process completed or failed: it ignores later events."""
        return self._status != "active"

    @property
    def position(self) -> int:
        """The global position of the last event it handled (0 before the first)."""
        return self._position

    @property
    def pending_deadlines(self) -> dict[str, datetime]:
        """The scheduled deadlines not yet reached nor cancelled: name to due time."""
        return {name: d.due_at for name, d in self._deadlines.items()}

    def now(self) -> datetime:
        """Return the current time from the runner's clock."""
        return self.clock.now()

    # -- what handlers call ----------------------------------------------------

    def record(self, event: Event, *, metadata: EventMetadata | None = None) -> None:
        """Record one of the manager's own events (see ``Aggregate.record``).

        Raises:
            ProcessEnded: the process completed or failed already.
        """
        self._check_active("record an event")
        super().record(event, metadata=metadata)

    def send(self, command: object, *, metadata: EventMetadata | None = None) -> str:
        """Ask to send ``command`` once the manager's new events are saved; return its id.

        The id is derived from the process's stream and the event being
        handled, so a resend after a crash has the same id; it travels in
        ``metadata.headers[COMMAND_ID_HEADER]``. Without ``metadata``, the
        command's metadata is caused by the event being handled.
        """
        self._check_active("send a command")
        trigger = self._trigger
        if trigger is None:
            raise RuntimeError(
                "send() is for @handles and @on_deadline methods: the runner sends the "
                "commands after it saves the manager"
            )
        index = len(self._outbox)
        command_id = str(
            uuid.uuid5(_COMMAND_NAMESPACE, f"{self.stream_id}/{trigger.event_id}/{index}")
        )
        base = metadata if metadata is not None else EventMetadata.caused_by(trigger)
        headers = {**base.headers, COMMAND_ID_HEADER: command_id}
        full = EventMetadata(
            correlation_id=base.correlation_id,
            causation_id=base.causation_id,
            tenant_id=base.tenant_id,
            actor=base.actor,
            traceparent=base.traceparent,
            tracestate=base.tracestate,
            headers=headers,
        )
        self._outbox.append(OutgoingCommand(command=command, command_id=command_id, metadata=full))
        return command_id

    def schedule(
        self,
        name: str,
        *,
        at: datetime | None = None,
        after: timedelta | None = None,
        payload: Any = None,
    ) -> None:
        """Schedule the deadline ``name`` at ``at`` or ``after`` from now; it replaces one so named.

        ``payload`` is any JSON-like value; the ``@on_deadline(name)`` handler
        gets it back in ``DeadlineReached.payload``.
        """
        if (at is None) == (after is None):
            raise ValueError("schedule a deadline with exactly one of at= or after=")
        if at is None:
            assert after is not None
            due = self.now() + after
        else:
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(f"{at!r} is naive; pass a timezone-aware datetime")
            due = at
        if not name:
            raise ValueError("a deadline needs a non-empty name")
        self.cancel_deadline(name)
        self.record(
            DeadlineScheduled(deadline_id=str(uuid7()), name=name, due_at=due, payload=payload)
        )

    def cancel_deadline(self, name: str) -> bool:
        """Cancel the pending deadline ``name``; return whether there was one."""
        pending = self._deadlines.get(name)
        if pending is None:
            return False
        self.record(DeadlineCancelled(deadline_id=pending.deadline_id, name=name))
        return True

    def complete(self, outcome: str = "completed") -> None:
        """End the process; pending deadlines are cancelled and later events ignored."""
        self._end(ProcessCompleted(outcome=outcome))

    def fail(self, reason: str) -> None:
        """End the process as failed; pending deadlines are cancelled and later events ignored."""
        self._end(ProcessFailed(reason=reason))

    def _end(self, event: ProcessCompleted | ProcessFailed) -> None:
        self._check_active("end the process")
        for name in list(self._deadlines):
            self.cancel_deadline(name)
        self.record(event)

    def _check_active(self, what: str) -> None:
        if self._status != "active":
            raise ProcessEnded(self.stream_id, what)

    # -- what the runner calls -------------------------------------------------

    def unsent_after(self, event_id: str) -> int | None:
        """Return the version before ``event_id`` was handled, if its commands are not all sent."""
        return self._unsent.get(event_id)

    def accepts(self, event: RecordedEvent[Event]) -> bool:
        """Return whether ``event`` is new to this process and the process would handle it."""
        if event.global_position <= self._position or self.is_ended:
            return False
        data = event.data
        if isinstance(data, DeadlineReached):
            return str(event.event_id) in self._reached
        return self.reacts_to(type(data))

    async def decide(self, event: RecordedEvent[Event]) -> list[OutgoingCommand]:
        """Run the handler of ``event``, record that it was handled; return the commands asked for.

        Nothing is stored here: save the manager, then send the commands.
        """
        version_before = self.version
        self._trigger, self._outbox = event, []
        try:
            data = event.data
            if isinstance(data, DeadlineReached):
                fn = self._deadline_handlers.get(data.name)
                if fn is None:
                    raise HandlerDefinitionError(
                        f"{type(self).__qualname__} scheduled the deadline {data.name!r} but "
                        f"has no method for it: add @on_deadline({data.name!r})"
                    )
                result = fn(self, data)
            else:
                fn = self._reactions.get(type(data))
                if fn is None:
                    raise HandlerDefinitionError(
                        f"{type(self).__qualname__} has no @handles method for {event.event_type!r}"
                    )
                result = fn(self, event)
            if inspect.isawaitable(result):
                await result
            outbox = self._outbox
        finally:
            self._trigger, self._outbox = None, []
        Aggregate.record(
            self,
            ProcessEventHandled(
                event_id=str(event.event_id),
                global_position=event.global_position,
                version_before=version_before,
                commands=len(outbox),
            ),
        )
        return outbox

    # -- appliers --------------------------------------------------------------

    @applies
    def _handled(self, event: ProcessEventHandled) -> None:
        self._position = max(self._position, event.global_position)
        self._reached.discard(event.event_id)
        if event.commands:
            self._unsent[event.event_id] = event.version_before

    @applies
    def _sent(self, event: ProcessCommandsSent) -> None:
        self._unsent.pop(event.event_id, None)

    @applies
    def _completed(self, event: ProcessCompleted) -> None:
        self._status, self._outcome = "completed", event.outcome

    @applies
    def _failed(self, event: ProcessFailed) -> None:
        self._status, self._outcome = "failed", event.reason

    @applies
    def _scheduled(self, event: DeadlineScheduled) -> None:
        self._deadlines[event.name] = event

    @applies
    def _cancelled(self, event: DeadlineCancelled) -> None:
        pending = self._deadlines.get(event.name)
        if pending is not None and pending.deadline_id == event.deadline_id:
            del self._deadlines[event.name]

    @applies
    def _reached_deadline(self, event: DeadlineReached) -> None:
        pending = self._deadlines.get(event.name)
        if pending is not None and pending.deadline_id == event.deadline_id:
            del self._deadlines[event.name]
            self._reached.add(str(reached_event_id(event.deadline_id)))
