"""The ready pipeline behaviours: validation, authorization, logging, tracing,
unit of work, retry on conflicts, timeouts.

Add them with ``BusBuilder.use``, outermost first. A sensible order for
commands::

    builder.use(TracingBehaviour()).use(LoggingBehaviour())
    builder.use(ValidationBehaviour()).use(AuthorizationBehaviour())
    builder.use(TimeoutBehaviour()).use(RetryBehaviour(), applies_to=Command)
    builder.use(UnitOfWorkBehaviour(new_unit_of_work), applies_to=Command)

Retry goes outside the unit of work, so that each attempt loads the
aggregates again in a fresh unit of work.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import anyio
import pydantic
from opentelemetry import metrics, trace

from uno.cqrs._bus import Next, unwrap_failure
from uno.cqrs._messages import Message, MessageContext, Principal, Query
from uno.cqrs.exceptions import (
    FieldError,
    MessageTimeout,
    NotAuthenticated,
    NotAuthorized,
    ValidationFailed,
)

__all__ = [
    "AuthorizationBehaviour",
    "AuthorizationPolicy",
    "LoggingBehaviour",
    "RetryBehaviour",
    "Rule",
    "TimeoutBehaviour",
    "TracingBehaviour",
    "UnitOfWorkBehaviour",
    "UnitOfWorkLike",
    "ValidationBehaviour",
    "field_errors",
    "parse_message",
]

M = TypeVar("M", bound=Message)
logger = logging.getLogger("uno.cqrs")

Rule = Callable[[Any], Iterable[FieldError]]
"""A custom validation rule: given the message, yield what is wrong with it."""


def field_errors(error: pydantic.ValidationError) -> list[FieldError]:
    """Return pydantic's errors as ``FieldError``s: path, message, kind."""
    return [
        FieldError(path=tuple(item["loc"]), message=item["msg"], kind=item["type"])
        for item in error.errors(include_url=False)
    ]


def parse_message(message_type: type[M], data: Any) -> M:
    """Validate raw data (a mapping or JSON bytes/str) into ``message_type``.

    Raises:
        ValidationFailed: with every field error and its path.
    """
    try:
        if isinstance(data, (str, bytes, bytearray)):
            return message_type.model_validate_json(data)
        return message_type.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationFailed(message_type.__qualname__, field_errors(exc)) from None


def _kind(message: Message) -> str:
    return "query" if isinstance(message, Query) else "command"


class ValidationBehaviour:
    """Check the message again, then its custom rules; raise every problem at once.

    A message is validated when it is made; this step catches one built
    with ``model_construct`` (which skips validation) and runs the rules
    given for its type (or a base class of it), collecting all their
    ``FieldError``s into one ``ValidationFailed``.
    """

    def __init__(self, rules: Mapping[type[Message], Sequence[Rule]] | None = None) -> None:
        self._rules = dict(rules or {})
        self._plans: dict[type[Message], tuple[Rule, ...]] = {}

    def _rules_of(self, message_type: type[Message]) -> tuple[Rule, ...]:
        plan = self._plans.get(message_type)
        if plan is None:
            plan = self._plans[message_type] = tuple(
                rule
                for base, rules in self._rules.items()
                if issubclass(message_type, base)
                for rule in rules
            )
        return plan

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        cls = type(message)
        errors: list[FieldError] = []
        try:
            cls.model_validate(message.model_dump(round_trip=True))
        except pydantic.ValidationError as exc:
            errors.extend(field_errors(exc))
        for rule in self._rules_of(cls):
            errors.extend(rule(message))
        if errors:
            raise ValidationFailed(cls.__qualname__, errors)
        return await call_next(message, context)


@runtime_checkable
class AuthorizationPolicy(Protocol):
    """Decides whether a principal may send a message, beyond its declared roles."""

    async def allows(self, principal: Principal, message: Message) -> bool | str:
        """Return ``True`` to allow; ``False`` or a reason (``str``) to deny."""
        ...


class AuthorizationBehaviour:
    """Refuse a message whose principal lacks its roles or permissions, or the policy denies.

    A message class declares ``roles`` (any one suffices) and
    ``permissions`` (all are needed) as class variables. A message that
    declares neither needs no principal unless a ``policy`` is given;
    ``anonymous_allowed=False`` makes every message need one.
    """

    def __init__(
        self, policy: AuthorizationPolicy | None = None, *, anonymous_allowed: bool = True
    ) -> None:
        self._policy = policy
        self._anonymous = anonymous_allowed

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        cls = type(message)
        needs = bool(cls.roles or cls.permissions or self._policy or not self._anonymous)
        if needs:
            principal = context.principal
            if principal is None:
                raise NotAuthenticated(cls.__qualname__)
            if cls.roles and not cls.roles & principal.roles:
                raise NotAuthorized(
                    cls.__qualname__,
                    principal.id,
                    f"it needs one of the roles {', '.join(sorted(cls.roles))}",
                )
            missing = cls.permissions - principal.permissions
            if missing:
                raise NotAuthorized(
                    cls.__qualname__,
                    principal.id,
                    f"it lacks the permissions {', '.join(sorted(missing))}",
                )
            if self._policy is not None:
                verdict = await self._policy.allows(principal, message)
                if verdict is not True:
                    reason = verdict if isinstance(verdict, str) else "the policy denied it"
                    raise NotAuthorized(cls.__qualname__, principal.id, reason)
        return await call_next(message, context)


class LoggingBehaviour:
    """Log each message handled: type, correlation id, duration, outcome; no payload by default.

    Successes go at ``level`` (DEBUG), failures at WARNING with the error's
    ``code``. ``include_payload=True`` adds the message's fields to the
    record's ``extra`` (never do it for messages that carry secrets).
    """

    def __init__(
        self,
        log: logging.Logger | None = None,
        *,
        level: int = logging.DEBUG,
        include_payload: bool = False,
    ) -> None:
        self._log = log or logger
        self._level = level
        self._payload = include_payload

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        started = time.perf_counter()
        extra: dict[str, Any] = {
            "message_type": type(message).__qualname__,
            "message_kind": _kind(message),
            "correlation_id": context.correlation_id,
        }
        if self._payload:
            extra["payload"] = message.model_dump(mode="json")
        try:
            result = await call_next(message, context)
        except Exception as exc:
            failure = unwrap_failure(exc)
            extra["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            extra["outcome"] = "failed"
            extra["error_code"] = getattr(failure, "code", type(failure).__qualname__)
            self._log.warning(
                "%s %s failed: %s",
                extra["message_kind"],
                extra["message_type"],
                extra["error_code"],
                extra=extra,
            )
            raise
        extra["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        extra["outcome"] = "handled"
        if self._log.isEnabledFor(self._level):
            self._log.log(
                self._level,
                "%s %s handled",
                extra["message_kind"],
                extra["message_type"],
                extra=extra,
            )
        return result


class TracingBehaviour:
    """An OpenTelemetry span per message, and counts and durations as metrics.

    The span is named ``"<kind> <MessageType>"`` (``command OpenAccount``)
    with ``uno.message.type``, ``uno.message.kind`` and
    ``uno.correlation_id``; a failure records the exception and the error
    code. Metrics: ``uno.cqrs.messages`` (a counter by type and outcome) and
    ``uno.cqrs.duration`` (a histogram, in seconds).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("uno.cqrs", tracer_provider=tracer_provider)
        meter = metrics.get_meter("uno.cqrs", meter_provider=meter_provider)
        self._count = meter.create_counter(
            "uno.cqrs.messages", unit="{message}", description="Messages handled by the buses"
        )
        self._duration = meter.create_histogram(
            "uno.cqrs.duration", unit="s", description="Time to handle a message"
        )

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        kind, name = _kind(message), type(message).__qualname__
        attributes = {"uno.message.type": name, "uno.message.kind": kind}
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"{kind} {name}",
            attributes={**attributes, "uno.correlation_id": context.correlation_id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call_next(message, context)
            except Exception as exc:
                failure = unwrap_failure(exc)
                code = getattr(failure, "code", type(failure).__qualname__)
                span.record_exception(failure)
                span.set_attribute("uno.error.code", code)
                span.set_status(trace.Status(trace.StatusCode.ERROR, code))
                self._record(attributes, "failed", started)
                raise
            self._record(attributes, "handled", started)
            return result

    def _record(self, attributes: dict[str, str], outcome: str, started: float) -> None:
        labels = {**attributes, "uno.outcome": outcome}
        self._count.add(1, labels)
        self._duration.record(time.perf_counter() - started, labels)


@runtime_checkable
class UnitOfWorkLike(Protocol):
    """What the unit of work behaviour drives; ``uno.event_sourcing.UnitOfWork`` is one."""

    async def commit(self) -> Any:
        """Save what the command changed, atomically."""
        ...

    def rollback(self) -> None:
        """Discard what the command changed."""
        ...


class UnitOfWorkBehaviour:
    """Give each command a unit of work; commit when the handler succeeds, roll back when not.

    ``factory(context)`` makes the unit of work (for instance
    ``lambda ctx: UnitOfWork(store, subscribers=[publish])``); handlers find
    it as ``context.unit_of_work``. Callbacks given to
    ``context.after_commit`` run after the commit, and never after a
    rollback: publish the command's events there (or through the unit of
    work's subscribers, which it calls after its commit).
    """

    def __init__(
        self,
        factory: Callable[[MessageContext], UnitOfWorkLike]
        | Callable[[MessageContext], Awaitable[UnitOfWorkLike]],
    ) -> None:
        self._factory = factory

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        made = self._factory(context)
        uow: UnitOfWorkLike = await made if isinstance(made, Awaitable) else made
        outer, context.unit_of_work = context.unit_of_work, uow
        try:
            try:
                result = await call_next(message, context)
            except BaseException:
                uow.rollback()
                context.discard_after_commit()
                raise
            try:
                await uow.commit()
            except BaseException:
                context.discard_after_commit()
                raise
        finally:
            context.unit_of_work = outer
        await context.run_after_commit()
        return result


DEFAULT_RETRY_CODES = frozenset(
    {"event_sourcing.concurrency_conflict", "event_storage.wrong_expected_version"}
)


class RetryBehaviour:
    """Run the handler again when it fails on a concurrency conflict: reload, decide again.

    An error whose ``code`` is in ``codes`` (by default ``ConcurrencyConflict``
    and ``WrongExpectedVersion``), or that is an instance of ``on``, is
    retried up to ``attempts`` times in all, waiting an exponential backoff
    with full jitter (``base_delay`` doubled each time, at most ``max_delay``).
    The last error is raised when the attempts are spent. Put it outside the
    unit of work behaviour, so each attempt gets a new unit of work.
    """

    def __init__(
        self,
        *,
        attempts: int = 3,
        codes: Iterable[str] = DEFAULT_RETRY_CODES,
        on: tuple[type[BaseException], ...] = (),
        base_delay: float = 0.01,
        max_delay: float = 0.5,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.attempts = attempts
        self.codes = frozenset(codes)
        self.on = on
        self.base_delay = base_delay
        self.max_delay = max_delay

    def retries(self, error: BaseException) -> bool:
        """Return whether ``error`` is one to retry."""
        failure = unwrap_failure(error)
        return isinstance(failure, self.on) or getattr(failure, "code", None) in self.codes

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        attempt = 1
        while True:
            try:
                return await call_next(message, context)
            except Exception as exc:
                if attempt >= self.attempts or not self.retries(exc):
                    raise
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                logger.info(
                    "retrying %s after a conflict (attempt %d of %d)",
                    type(message).__qualname__,
                    attempt + 1,
                    self.attempts,
                    extra={"message_type": type(message).__qualname__, "attempt": attempt + 1},
                )
                await anyio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not secrets
                attempt += 1


class TimeoutBehaviour:
    """Cancel a handler that runs longer than its message's ``timeout`` (or ``default``).

    Raises ``MessageTimeout``; put it outside the unit of work behaviour so
    that the cancelled command rolls back. A sync handler runs in a thread
    and cannot be interrupted: it finishes, and the timeout is raised then.
    """

    def __init__(self, default: float | None = None) -> None:
        self.default = default

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        seconds = type(message).timeout if type(message).timeout is not None else self.default
        if seconds is None:
            return await call_next(message, context)
        with anyio.move_on_after(seconds):
            return await call_next(message, context)
        raise MessageTimeout(type(message).__qualname__, seconds)
