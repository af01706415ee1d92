"""Group commit: concurrent autocommit appends share transactions when the store is busy.

An append starts its own transaction at once while fewer than ``lanes`` are
under way. One that arrives when all lanes are busy waits; when a lane frees,
the appends waiting then go together, in one transaction, so that a busy store
commits (and waits for its database to flush) once for many appends.

Each append still succeeds or fails alone: when the shared transaction is
refused (a version another writer took, a stored id, a deleted stream), each
of its appends is made again on its own, and gets its own result or error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from uno.event_storage._prepared import PreparedAppend
from uno.events import AppendResult

__all__ = ["LARGEST", "AppendGroups", "GroupRefused"]

MOST_APPENDS = 64
"""Most appends in one shared transaction."""
MOST_EVENTS = 1_000
"""Most events in one shared transaction."""
LARGEST = 100
"""Most events of an append that may wait for a group; a larger one goes alone at once."""


class GroupRefused(Exception):
    """The shared transaction was refused as a whole: make each of its appends alone."""


_Waiting = tuple[PreparedAppend, "asyncio.Future[AppendResult]"]


class AppendGroups:
    """Run appends, at most ``lanes`` transactions at once, grouping those that must wait.

    ``alone`` makes one append in a transaction of its own; ``together`` makes
    several (distinct streams) in one, or raises ``GroupRefused`` having
    written nothing. Any other error of ``together`` is every member's.
    """

    def __init__(
        self,
        lanes: int,
        alone: Callable[[PreparedAppend], Awaitable[AppendResult]],
        together: Callable[[list[PreparedAppend]], Awaitable[list[AppendResult]]],
    ) -> None:
        self.lanes = lanes
        self._alone = alone
        self._together = together
        self._busy = 0  # lanes taken
        self._idle = asyncio.Event()  # set while no lane is taken
        self._idle.set()
        self._waiting: list[_Waiting] = []  # only while every lane is taken
        self._tasks: set[asyncio.Task[None]] = set()

    async def append(self, append: PreparedAppend) -> AppendResult:
        """Make ``append``: at once if a lane is free, else with the next group."""
        if self._busy < self.lanes:
            self._take_lane()
            try:
                return await self._alone(append)
            finally:
                self._lane_done()
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((append, future))
        return await future

    async def drain(self) -> None:
        """Return when no append of the store's is under way (it closes after it)."""
        await self._idle.wait()

    def _take_lane(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _lane_done(self) -> None:
        """Keep the lane until the callbacks already due have run, then start the next group.

        The callers that the lane's appends just woke run first: a caller that
        appends again at once waits, and goes with the group, instead of
        taking the lane alone while the others wait for the next.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a caller's task destroyed after its loop closed
            self._release()
            return
        loop.call_soon(self._next_group)

    def _release(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()

    def _next_group(self) -> None:
        group = self._take_group()
        if not group:
            self._release()
            return
        task = asyncio.get_running_loop().create_task(self._run(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_group(self) -> list[_Waiting]:
        """Take the waiting appends that fit one transaction: a stream once, within the limits."""
        group: list[_Waiting] = []
        left: list[_Waiting] = []
        streams: set[str] = set()
        events = 0
        for item in self._waiting:
            append, future = item
            if future.done():  # its caller stopped waiting before it was sent: drop it
                continue
            count = len(append.events)
            if group and (
                append.stream_id in streams
                or len(group) == MOST_APPENDS
                or events + count > MOST_EVENTS
            ):
                left.append(item)
                continue
            group.append(item)
            streams.add(append.stream_id)
            events += count
        self._waiting = left
        return group

    async def _run(self, group: list[_Waiting]) -> None:
        try:
            if len(group) == 1:
                await _settle(group[0], self._alone)
                return
            try:
                results = await self._together([append for append, _ in group])
            except GroupRefused:
                await asyncio.gather(*(_settle(item, self._alone) for item in group))
            except BaseException as exc:
                for item in group:
                    _fail(item[1], exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():  # its caller may have been cancelled
                        future.set_result(result)
        finally:
            self._lane_done()


async def _settle(
    item: _Waiting, alone: Callable[[PreparedAppend], Awaitable[AppendResult]]
) -> None:
    """Make one waiting append alone and hand its caller the result or the error."""
    append, future = item
    try:
        result = await alone(append)
    except BaseException as exc:
        _fail(future, exc)
        if not isinstance(exc, Exception):
            raise
    else:
        if not future.done():
            future.set_result(result)


def _fail(future: asyncio.Future[AppendResult], exc: BaseException) -> None:
    """Hand ``exc`` to the caller waiting on ``future``, unless it stopped waiting."""
    if future.done():
        return
    if isinstance(exc, Exception):
        future.set_exception(exc)
    else:  # cancelled, or the loop is going down: the outcome is unknown to the caller
        future.cancel()
