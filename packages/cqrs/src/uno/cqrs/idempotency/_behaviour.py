"""The idempotency behaviour: a command sent again with its key returns the first result.

The first send of a key claims it in the store, runs the handler and keeps
the encoded result for the retention time; a later send of the same key and
the same message finds the result and returns it without running anything.
Two sends at once: one claims, the other waits for the first to finish and
returns its result. A failed handler frees the key, so the client may retry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pydantic

from uno.cqrs._bus import Next
from uno.cqrs._messages import Message, MessageContext
from uno.cqrs._result import Err, Ok
from uno.cqrs.exceptions import (
    BusConfigurationError,
    FieldError,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    ValidationFailed,
)
from uno.cqrs.idempotency._sqlite import SQLiteIdempotencyStore
from uno.cqrs.idempotency._store import IdempotencyStore, InMemoryIdempotencyStore

__all__ = ["REPLAYED", "IdempotencyBehaviour", "open_idempotency_store"]

logger = logging.getLogger("uno.cqrs")

REPLAYED = "uno.cqrs.idempotent_replay"
"""The ``MessageContext.items`` key set to ``True`` when a send returned a kept result."""

MAX_KEY_LENGTH = 255
_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)

KeyOf = Callable[[Message, MessageContext], str | None]


def _context_key(message: Message, context: MessageContext) -> str | None:
    return context.idempotency_key


def _value_type(returns: Any) -> Any:
    """The type of what the handler's caller gets: ``Ok[T]`` and ``Result[T, E]`` give ``T``."""
    if returns is None or returns is type(None):
        return type(None)
    origin = typing.get_origin(returns)
    if origin is Ok:
        return typing.get_args(returns)[0]
    if returns is Ok:
        return Any
    if origin in (typing.Union, types.UnionType):
        kept = []
        for member in typing.get_args(returns):
            if member is Err or typing.get_origin(member) is Err:
                continue
            kept.append(_value_type(member))
        return kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]  # noqa: UP007
    return returns


class IdempotencyBehaviour:
    """Run a command once per idempotency key; a repeat returns the first result.

    The key is ``MessageContext.idempotency_key`` (or what ``key`` returns
    for the message and context); a message without one runs as usual. Keys
    of different principals never meet (``per_principal``). The result is
    kept as JSON, encoded and decoded by pydantic as the handler's return
    annotation says (``Ok[T]``/``Result[T, E]`` keep ``T``), so a repeat
    returns a value of the same type. Only successes are kept: a failure
    frees the key.

    Args:
        store: Where keys live (``InMemoryIdempotencyStore``, the SQLite or
            PostgreSQL stores, or ``open_idempotency_store(url)``).
        retention: Seconds a result is kept after the first send finished.
        lease: Seconds a claim lasts without renewal; the behaviour renews it
            every third of that while the handler runs, so only a send whose
            process died loses it, and then a repeat runs the command again.
        wait: Seconds a repeat waits for a first send still running before it
            raises ``IdempotencyKeyInProgress``.
        key: Where to find the key instead of the context.
        per_principal: Scope keys by ``context.principal.id``.

    Put it outside the retry and unit of work behaviours: a repeat must not
    open a unit of work, and the result is kept only after the commit.

    Raises (from a send):
        IdempotencyKeyReused: the key came with another message before.
        IdempotencyKeyInProgress: the first send still runs after ``wait``.
        ValidationFailed: the key is empty or longer than 255 characters.
        IdempotencyStoreUnavailable: the store failed; nothing ran.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        retention: float = 24 * 3600.0,
        lease: float = 60.0,
        wait: float = 10.0,
        key: KeyOf | None = None,
        per_principal: bool = True,
    ) -> None:
        if retention <= 0 or lease <= 0 or wait < 0:
            raise BusConfigurationError(
                f"IdempotencyBehaviour needs retention > 0, lease > 0 and wait >= 0, got "
                f"retention={retention}, lease={lease}, wait={wait}"
            )
        self.store = store
        self.retention = retention
        self.lease = lease
        self.wait = wait
        self._key_of = key or _context_key
        self._per_principal = per_principal

    def bind(self, message_type: type[Message], returns: Any) -> _Bound:
        """Prepare for one message type at build time: how its handler's result is kept.

        Raises:
            BusConfigurationError: pydantic cannot encode the return annotation.
        """
        try:
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(_value_type(returns))
        except pydantic.PydanticUserError as exc:  # e.g. no schema for an arbitrary class
            raise BusConfigurationError(
                f"the handler of {message_type.__qualname__} returns {returns!r}, which the "
                "idempotency behaviour cannot keep as JSON: return a pydantic model, a "
                f"dataclass or builtins, or leave the command out of it ({exc})"
            ) from exc
        return _Bound(self, adapter)

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        return await self.run(message, context, call_next, _ANY)

    def _store_key(self, key: str, message: Message, context: MessageContext) -> str:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValidationFailed(
                type(message).__qualname__,
                [
                    FieldError(
                        path=("idempotency_key",),
                        message=f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters, "
                        f"this one {len(key)}",
                        kind="idempotency_key",
                    )
                ],
            )
        principal = context.principal
        if self._per_principal and principal is not None:
            return f"{len(principal.id)}:{principal.id}:{key}"
        return key

    async def run(
        self,
        message: Message,
        context: MessageContext,
        call_next: Next,
        adapter: pydantic.TypeAdapter[Any],
    ) -> Any:
        """Handle ``message`` once per key, keeping its result with ``adapter``."""
        key = self._key_of(message, context)
        if key is None:
            return await call_next(message, context)
        cls = type(message)
        stored_key = self._store_key(key, message, context)
        fingerprint = hashlib.sha256(
            f"{cls.__module__}.{cls.__qualname__}\0".encode() + message.model_dump_json().encode()
        ).hexdigest()
        token = os.urandom(16).hex()
        deadline = anyio.current_time() + self.wait
        pause = 0.005
        while True:
            claim = await self.store.claim(stored_key, fingerprint, token, self.lease)
            if claim.status == "claimed":
                break
            if claim.fingerprint != fingerprint:
                raise IdempotencyKeyReused(key, cls.__qualname__)
            if claim.status == "done":
                context.items[REPLAYED] = True
                return adapter.validate_json(claim.result or b"null")
            left = deadline - anyio.current_time()
            if left <= 0:
                raise IdempotencyKeyInProgress(key, cls.__qualname__, self.wait)
            await anyio.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)

        try:
            value = await self._while_held(stored_key, token, call_next(message, context))
        except BaseException:
            await self._release(stored_key, token)
            raise
        try:
            encoded = adapter.dump_json(value)
        except (ValueError, TypeError):  # pydantic_core.PydanticSerializationError is a ValueError
            logger.exception(
                "%s ran, but its result cannot be kept for idempotency key %r; a repeat "
                "will run it again: annotate the handler's return type",
                cls.__qualname__,
                key,
            )
            await self._release(stored_key, token)
            return value
        if not await self.store.complete(stored_key, token, encoded, self.retention):
            logger.warning(
                "%s with idempotency key %r outlived its lease; a repeat may have run it again",
                cls.__qualname__,
                key,
            )
        return value

    async def _while_held(self, stored_key: str, token: str, handling: Awaitable[Any]) -> Any:
        """Await ``handling`` while a task renews the claim's lease."""
        failure: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._renew, stored_key, token)
            try:
                value = await handling
            except Exception as exc:  # kept out of the task group, which would wrap it
                failure = exc
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return value

    async def _renew(self, stored_key: str, token: str) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                if not await self.store.renew(stored_key, token, self.lease):
                    return
            except Exception:
                logger.exception("could not renew an idempotency key's lease")

    async def _release(self, stored_key: str, token: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release(stored_key, token)
            except Exception:
                logger.exception("could not free an idempotency key after a failure")


class _Bound:
    """The behaviour for one message type, with its result's adapter."""

    __slots__ = ("_adapter", "_behaviour")

    def __init__(self, behaviour: IdempotencyBehaviour, adapter: pydantic.TypeAdapter[Any]) -> None:
        self._behaviour = behaviour
        self._adapter = adapter

    async def __call__(self, message: Message, context: MessageContext, call_next: Next) -> Any:
        return await self._behaviour.run(message, context, call_next, self._adapter)


@asynccontextmanager
async def open_idempotency_store(url: str, **options: Any) -> AsyncIterator[IdempotencyStore]:
    """Open the idempotency key store at ``url``; close it on leaving the block.

    ``memory://``, ``sqlite:///keys.db`` and ``postgresql://user@host/db``
    (with the ``[postgres]`` extra; ``schema=`` and ``table=`` options).

    Raises:
        BusConfigurationError: the URL's scheme is none of those.
        IdempotencyStoreUnavailable: the database cannot be reached.
    """
    scheme = url.partition("://")[0].lower()
    store: IdempotencyStore
    if scheme == "memory":
        store = InMemoryIdempotencyStore(**options)
    elif scheme == "sqlite":
        sqlite_store = SQLiteIdempotencyStore.from_url(url, **options)
        await sqlite_store.open()
        store = sqlite_store
    elif scheme in ("postgresql", "postgres"):
        try:
            from uno.cqrs.idempotency.postgres import (  # noqa: PLC0415 - psycopg is an extra
                PostgresIdempotencyStore,
            )
        except ImportError as exc:
            raise BusConfigurationError(
                f"a PostgreSQL idempotency store needs `pip install 'uno-cqrs[postgres]'` ({exc})"
            ) from exc
        store = await PostgresIdempotencyStore.from_url(url, **options)
    else:
        raise BusConfigurationError(
            f"{url!r} is not an idempotency store URL: use memory://, sqlite:///keys.db or "
            "postgresql://user@host/db"
        )
    try:
        yield store
    finally:
        await store.close()
