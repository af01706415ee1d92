"""Cache query results by query, for a TTL, until a read model they depend on changes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import anyio
import msgspec
from anyio.abc import TaskGroup

from uno.cqrs._cache._backend import CacheBackend
from uno.cqrs._cache._codec import decode_result, encode_result, query_cache_key, query_type_name
from uno.cqrs._changes import ReadModelChanges
from uno.cqrs.exceptions import CacheSerializationFailed, CacheUnavailable, QueryCacheNotOpen

__all__ = ["QueryCache"]

T = TypeVar("T")

logger = logging.getLogger("uno.cqrs")

_RETRY_AFTER = 1.0
"""Seconds the background invalidation waits before retrying a backend that failed."""

_Entry = tuple[list[str], list[str], bytes]
"""What is stored: the tags, their generations when the value was computed, the value."""


class _Flight:
    """One computation in progress, which concurrent misses of the same key wait for."""

    __slots__ = ("abandoned", "done", "error", "generations", "payload", "tags")

    def __init__(self, tags: list[str], generations: list[str]) -> None:
        self.tags = tags
        self.generations = generations
        self.done = anyio.Event()
        self.payload: bytes | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class QueryCache:
    """Answer a query from the cache, or compute it once and keep it for a TTL.

    An entry is tagged with the read models it ``depends_on``. When
    ``changes`` (a ``ReadModelChanges``) reports one of them changed, every
    entry tagged with it stops being served, in this process at once and in
    the others that share the backend on their next read. Concurrent misses of
    one key in this process run the loader once (each process computes at
    most once per key and generation). A value computed while its read model
    changed is never served afterwards: entries carry the generation of each
    tag they were computed under, and a write under an old generation is
    refused.

    Use it inside ``async with``: entering subscribes to ``changes`` for
    ``read_models`` and starts moving invalidations to the backend; leaving
    unsubscribes and sends what is left. In a deployment of several processes,
    name in ``read_models`` every read model that this process writes, even
    the ones it never caches itself, so its changes reach the others' entries.

    Args:
        backend: where entries live: ``InMemoryCacheBackend`` or ``RedisCacheBackend``.
        changes: the change notices of the read models (``None``: only ``invalidate``).
        read_models: names to subscribe to on entry (tags used later subscribe lazily).
        default_ttl: seconds an entry lives when ``get_or_load`` gives no ``ttl``.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        changes: ReadModelChanges | None = None,
        read_models: Iterable[str] = (),
        default_ttl: float = 60.0,
    ) -> None:
        _check_ttl(default_ttl)
        self.backend = backend
        self.default_ttl = default_ttl
        self._changes = changes
        self._read_models = list(read_models)
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._flights: dict[str, _Flight] = {}
        self._pending: set[str] = set()
        self._flushing: set[str] = set()
        self._flush_lock = anyio.Lock()
        self._wake = anyio.Event()
        self._tasks: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        if self._tasks is not None:
            raise RuntimeError("this QueryCache is already open")
        self._tasks = await anyio.create_task_group().__aenter__()
        self._tasks.start_soon(self._send_invalidations)
        for name in self._read_models:
            self._watch(name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, None
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()
        self._unsubscribe.clear()
        try:
            with anyio.CancelScope(shield=True):
                await self.flush()
        except CacheUnavailable:
            logger.warning("the query cache closed before it could send its invalidations")
        finally:
            if tasks is not None:
                tasks.cancel_scope.cancel()
                await tasks.__aexit__(None, None, None)

    @overload
    async def get_or_load(
        self,
        query: object,
        loader: Callable[[], Awaitable[T]],
        *,
        result_type: type[T],
        depends_on: Iterable[str],
        ttl: float | None = None,
    ) -> T: ...

    @overload
    async def get_or_load(
        self,
        query: object,
        loader: Callable[[], Awaitable[Any]],
        *,
        depends_on: Iterable[str],
        ttl: float | None = None,
    ) -> Any: ...

    async def get_or_load(
        self,
        query: object,
        loader: Callable[[], Awaitable[Any]],
        *,
        result_type: Any = Any,
        depends_on: Iterable[str],
        ttl: float | None = None,
    ) -> Any:
        """Return the cached result of ``query``, or ``await loader()`` and cache it.

        The result goes through msgspec both ways, on a hit and on a miss, so a
        caller gets the same kind of value either way: ``result_type`` as decoded
        (``Any``: plain builtins, dicts for structs and models).

        Args:
            query: a pydantic model or msgspec struct; its type and fields make the key.
            loader: computes the result when the cache has none.
            result_type: what to decode the result as (a struct, a model, ``list[X]``...).
            depends_on: the read models the result is read from.
            ttl: seconds the entry lives (default: the cache's ``default_ttl``).

        Raises:
            UncacheableQuery: the query cannot make a key.
            CacheSerializationFailed: the loader's result does not encode.
            CacheUnavailable: the backend (Redis) does not answer.
            QueryCacheNotOpen: the cache is used outside its ``async with``.
        """
        if self._tasks is None:
            raise QueryCacheNotOpen
        key = query_cache_key(query)
        query_type = query_type_name(query)
        tags = sorted(set(depends_on))
        lifetime = self.default_ttl if ttl is None else _check_ttl(ttl)
        for tag in tags:
            self._watch(tag)
        while True:
            if self._pending.intersection(tags) or self._flushing.intersection(tags):
                await self.flush()
            stored, generations = await self.backend.read(key, tags)
            if stored is not None:
                payload = _current_payload(stored, tags, generations)
                if payload is not None:
                    try:
                        return decode_result(query_type, payload, result_type)
                    except CacheSerializationFailed:
                        logger.warning("dropping a cached %s that no longer decodes", query_type)
            flight = self._flights.get(key)
            if flight is None or flight.generations != generations:
                return await self._compute(
                    key,
                    loader,
                    query_type=query_type,
                    result_type=result_type,
                    tags=tags,
                    generations=generations,
                    ttl=lifetime,
                )
            await flight.done.wait()
            if flight.abandoned:
                continue
            if flight.error is not None:
                raise flight.error
            assert flight.payload is not None
            return decode_result(query_type, flight.payload, result_type)

    async def invalidate(self, *read_models: str) -> None:
        """Stop serving every entry that depends on one of ``read_models``, in every process.

        Raises:
            CacheUnavailable: the backend (Redis) does not answer.
        """
        for name in read_models:
            self._supersede(name)
        await self.backend.invalidate(read_models)

    async def flush(self) -> None:
        """Send the invalidations that changes reported to the backend now.

        Raises:
            CacheUnavailable: the backend (Redis) does not answer; they stay pending.
        """
        async with self._flush_lock:
            tags, self._pending = self._pending, set()
            if not tags:
                return
            self._flushing = tags
            try:
                await self.backend.invalidate(sorted(tags))
            except BaseException:
                self._pending |= tags
                raise
            finally:
                self._flushing = set()

    async def _compute(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        query_type: str,
        result_type: Any,
        tags: list[str],
        generations: list[str],
        ttl: float,
    ) -> Any:
        flight = self._flights[key] = _Flight(tags, generations)
        try:
            payload = encode_result(query_type, await loader())
            result = decode_result(query_type, payload, result_type)
            # Stale already (changed here meanwhile): the caller gets it, nobody else will.
            if self._flights.get(key) is flight:
                entry = msgspec.msgpack.encode((tags, generations, payload))
                await self.backend.write(key, entry, tags=tags, generations=generations, ttl=ttl)
        except Exception as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.abandoned = True
            raise
        else:
            flight.payload = payload
            return result
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def _watch(self, read_model: str) -> None:
        if self._changes is not None and read_model not in self._unsubscribe:
            self._unsubscribe[read_model] = self._changes.subscribe(read_model, self._changed)

    def _changed(self, read_model: str) -> None:
        # Called by ReadModelChanges.changed, synchronously, in the event loop's thread.
        self._supersede(read_model)
        self._pending.add(read_model)
        self._wake.set()

    def _supersede(self, read_model: str) -> None:
        """Let no new miss join a computation that began before ``read_model`` changed."""
        for key, flight in list(self._flights.items()):
            if read_model in flight.tags:
                del self._flights[key]

    async def _send_invalidations(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.flush()
            except Exception as exc:  # kept pending and retried, never lost
                # A failure here must not cancel the application code that opened the cache.
                logger.warning("query cache invalidations wait for the backend: %s", exc)
                await anyio.sleep(_RETRY_AFTER)
                self._wake.set()


def _current_payload(stored: bytes, tags: list[str], generations: list[str]) -> bytes | None:
    """Return the stored value when it was computed under the current generations."""
    try:
        entry_tags, entry_generations, payload = msgspec.msgpack.decode(stored, type=_Entry)
    except msgspec.DecodeError:
        return None
    if entry_tags != tags or entry_generations != generations:
        return None
    return payload


def _check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise ValueError(f"a cache ttl must be a positive number of seconds, not {ttl!r}")
    return ttl
