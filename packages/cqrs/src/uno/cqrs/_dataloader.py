"""Batch and memoize the loads of one request, so that N lookups make one query, not N.

A ``DataLoader`` collects every ``load(key)`` made by the tasks of a request
while they run up to their next pause, then calls the batch function once with
all the distinct keys (in chunks of ``max_batch_size``). Each key is fetched at
most once per loader: make one loader per request (for instance in a
``uno.di`` request scope), never one per process, or it serves stale values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar, overload

import anyio
import anyio.lowlevel

from uno.cqrs.exceptions import BatchLoadMismatch, LoaderKeyMissing

__all__ = ["BatchLoadMismatch", "DataLoader", "LoaderKeyMissing"]

K = TypeVar("K")
V = TypeVar("V")

_MAX_SETTLE_ROUNDS = 16
"""How many scheduler turns a dispatch waits, at most, for more keys to arrive."""


class _Pending:
    """One key's load: settled once with a value or an error, or abandoned to be retried."""

    __slots__ = ("abandoned", "done", "error", "key", "value")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.abandoned = False


class DataLoader(Generic[K, V]):
    """Coalesce the concurrent loads of one request into calls of one batch function.

    The batch function receives a list of distinct keys and returns either a
    sequence of values in the same order or a mapping from key to value. A
    value that is an ``Exception`` fails that key's load only. A key with no
    value (absent from the mapping, or ``None`` in the sequence) loads as
    ``None`` with ``missing="none"`` (the default) or raises
    ``LoaderKeyMissing`` with ``missing="error"``. When the batch function
    raises, every load of that batch raises the same error.

    Values are memoized by key for the life of the loader (``cache=False``
    turns that off; concurrent loads of one key still share one fetch).
    Failed loads are not memoized, so loading the key again fetches it again.
    The first load of a batch runs the batch function in its own task, after
    letting the request's other tasks run up to their next pause (a few turns
    of the scheduler) to add their keys; this works under any anyio backend.
    When that task is cancelled, the other tasks waiting on the batch load
    their keys again instead of failing.

    Args:
        batch_load: ``async (keys) -> values or mapping``.
        max_batch_size: at most this many keys per call (``None``: no limit).
        cache: memoize values by key.
        cache_key: map a key to the hashable memo key (default: the key itself).
        missing: what a key without a value loads as: ``None`` or an error.
        name: names the loader in errors (default: the batch function's name).
    """

    @overload
    def __init__(
        self: DataLoader[K, V],
        batch_load: Callable[
            [list[K]], Awaitable[Sequence[V | Exception | None] | Mapping[K, V | Exception]]
        ],
        *,
        missing: Literal["error"],
        max_batch_size: int | None = None,
        cache: bool = True,
        cache_key: Callable[[K], Hashable] | None = None,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: DataLoader[K, V | None],
        batch_load: Callable[
            [list[K]], Awaitable[Sequence[V | Exception | None] | Mapping[K, V | Exception]]
        ],
        *,
        missing: Literal["none"] = "none",
        max_batch_size: int | None = None,
        cache: bool = True,
        cache_key: Callable[[K], Hashable] | None = None,
        name: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        batch_load: Callable[[list[K]], Awaitable[Any]],
        *,
        missing: Literal["none", "error"] = "none",
        max_batch_size: int | None = None,
        cache: bool = True,
        cache_key: Callable[[K], Hashable] | None = None,
        name: str | None = None,
    ) -> None:
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1 or None, not {max_batch_size}")
        if missing not in ("none", "error"):
            raise ValueError(f"missing must be 'none' or 'error', not {missing!r}")
        self._batch_load = batch_load
        self._missing = missing
        self._max_batch_size = max_batch_size
        self._cache = cache
        self._cache_key: Callable[[K], Hashable] = cache_key or _itself
        self.name: str = name or str(
            getattr(batch_load, "__qualname__", type(batch_load).__qualname__)
        )
        self._memo: dict[Hashable, _Pending] = {}
        self._queue: list[_Pending] = []
        self._leader_needed = False

    async def load(self, key: K) -> V:
        """Return the key's value, fetched in one batch with the other loads of this moment.

        Raises:
            LoaderKeyMissing: the key has no value and the loader refuses missing keys.
            BatchLoadMismatch: the batch function returned the wrong number of values.
        """
        return (await self.load_many((key,)))[0]

    async def load_many(self, keys: Iterable[K]) -> list[V]:
        """Return the values of ``keys`` in order, fetched with the other loads of this moment.

        Every key is loaded before this returns; when some fail, the first
        failing key's error (in key order) is raised.
        """
        wanted = list(keys)
        pending = [self._enqueue(key) for key in wanted]
        while True:
            if self._leader_needed:
                # The first load of a batch runs its dispatch; the others wait for it.
                self._leader_needed = False
                await self._dispatch()
            for entry in pending:
                await entry.done.wait()
            abandoned = [index for index, entry in enumerate(pending) if entry.abandoned]
            if not abandoned:
                break
            for index in abandoned:
                pending[index] = self._enqueue(wanted[index])
        for entry in pending:
            if entry.error is not None:
                raise entry.error
        return [entry.value for entry in pending]

    def prime(self, key: K, value: V, *, force: bool = False) -> None:
        """Memoize ``value`` for ``key`` without fetching it (``force`` replaces a known value)."""
        if not self._cache:
            return
        memo_key = self._cache_key(key)
        known = self._memo.get(memo_key)
        if known is not None and not force:
            return
        entry = _Pending(key)
        entry.value = value
        entry.done.set()
        self._memo[memo_key] = entry

    def clear(self, key: K) -> None:
        """Forget the memoized value of ``key``, so the next load fetches it again."""
        self._memo.pop(self._cache_key(key), None)

    def clear_all(self) -> None:
        """Forget every memoized value."""
        self._memo.clear()

    def _enqueue(self, key: K) -> _Pending:
        memo_key = self._cache_key(key)
        known = self._memo.get(memo_key)
        if known is not None:
            return known
        entry = _Pending(key)
        # Memoized even with cache=False until it settles, so concurrent loads share one fetch.
        self._memo[memo_key] = entry
        self._queue.append(entry)
        if len(self._queue) == 1:
            self._leader_needed = True
        return entry

    async def _dispatch(self) -> None:
        # Let the other tasks of the request run up to their next pause and add their keys.
        try:
            for _ in range(_MAX_SETTLE_ROUNDS):
                queued = len(self._queue)
                await anyio.lowlevel.checkpoint()
                if len(self._queue) == queued:
                    break
        except BaseException:
            # Cancelled before the batch started: hand its keys back to their other waiters.
            batch, self._queue = self._queue, []
            self._abandon(batch)
            raise
        batch, self._queue = self._queue, []
        size = self._max_batch_size or len(batch)
        chunks = [batch[start : start + size] for start in range(0, len(batch), size)]
        if len(chunks) == 1:
            await self._run(chunks[0])
            return
        async with anyio.create_task_group() as tasks:
            for chunk in chunks:
                tasks.start_soon(self._run, chunk)

    async def _run(self, chunk: list[_Pending]) -> None:
        keys = [entry.key for entry in chunk]
        try:
            result = await self._batch_load(keys)
        except Exception as exc:
            for entry in chunk:
                self._settle(entry, error=exc)
            return
        except BaseException:
            self._abandon(chunk)
            raise
        if isinstance(result, Mapping):
            values = [result.get(key) for key in keys]
        else:
            values = list(result)
            if len(values) != len(keys):
                mismatch = BatchLoadMismatch(self.name, len(keys), len(values))
                for entry in chunk:
                    self._settle(entry, error=mismatch)
                return
        for entry, value in zip(chunk, values, strict=True):
            if isinstance(value, Exception):
                self._settle(entry, error=value)
            elif value is None and self._missing == "error":
                self._settle(entry, error=LoaderKeyMissing(self.name, entry.key))
            else:
                self._settle(entry, value=value)

    def _settle(
        self, entry: _Pending, *, value: object = None, error: BaseException | None = None
    ) -> None:
        entry.value = value
        entry.error = error
        if error is not None or not self._cache:
            self._forget(entry)
        entry.done.set()

    def _abandon(self, entries: list[_Pending]) -> None:
        for entry in entries:
            self._forget(entry)
            entry.abandoned = True
            entry.done.set()

    def _forget(self, entry: _Pending) -> None:
        memo_key = self._cache_key(entry.key)
        if self._memo.get(memo_key) is entry:
            del self._memo[memo_key]


def _itself(key: Hashable) -> Hashable:
    return key
