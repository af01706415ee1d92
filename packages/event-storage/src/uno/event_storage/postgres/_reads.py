"""The PostgreSQL store's read path: statements, the read fence, the global log.

``ReadingStore`` is the part of ``PostgresEventStore`` that reads; every read
of the global log first asks the fence function how far it may read (see
``_schema``), in a statement of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
from psycopg import AsyncCursor
from psycopg.rows import TupleRow

from uno.event_storage._prepared import Row
from uno.event_storage.exceptions import (
    StoreConfigurationError,
    StreamDeleted,
)
from uno.event_storage.postgres._appends import AppendingStore
from uno.event_storage.postgres._fence import FenceStatus
from uno.event_storage.postgres._schema import SQLSTATES

__all__ = ["ReadingStore"]


class ReadingStore(AppendingStore):
    """The read path of ``PostgresEventStore``."""

    @asynccontextmanager
    async def _statements(self) -> AsyncIterator[AsyncCursor[TupleRow]]:
        """Yield a cursor of the bound connection, or of one borrowed for the block.

        The block runs shielded from cancellation: a cancelled read finishes
        its statements (bounded: a page, a count) before the cancellation is
        delivered. Cancelled while psycopg waits for a result, a statement
        would be cancelled on the server, and a second cancellation during
        that wait (anyio delivers one at every await of a cancelled scope)
        makes psycopg close the connection: a burst of cancelled requests
        would empty the pool. Waiting for a connection is not shielded, and
        the cancellation is delivered as the block ends.
        """
        with self._translated():
            if self._bound is not None:
                cur: AsyncCursor[TupleRow] = self._bound.cursor()
                with anyio.CancelScope(shield=True):
                    yield cur
            else:
                async with self._connections.cursor() as cur:
                    with anyio.CancelScope(shield=True):
                        yield cur
        await anyio.lowlevel.checkpoint_if_cancelled()  # delivered once the statements are done

    async def _read_fence(self, cur: AsyncCursor[TupleRow]) -> int:
        """Return the position below which readers read (see ``_schema``)."""
        try:
            await cur.execute(self._sql.read_fence)
        except psycopg.Error as exc:
            if exc.sqlstate == SQLSTATES["fence_isolation"]:
                raise StoreConfigurationError(
                    f"the global log cannot be read in a {exc.diag.message_primary} "
                    "transaction: its snapshot predates the read fence and would miss "
                    "events; read it in autocommit or in a READ COMMITTED transaction"
                ) from exc
            raise
        row = await cur.fetchone()
        assert row is not None  # the function returns one row
        return int(row[0])

    # -- reading ---------------------------------------------------------------

    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        if from_version is None:
            from_version = 2**31 - 1 if backwards else 1
        query = self._sql.read_stream_backwards if backwards else self._sql.read_stream_forwards
        async with self._statements() as cur:
            await cur.execute(
                query, {"id": stream_id, "v": from_version, "limit": limit}, binary=True
            )
            # Row's columns (without the stream id), then the stream's deletion state.
            rows: list[Any] = await cur.fetchall()
            if rows:
                deleted = rows[0][9]
            else:  # no events: the stream may still be a tombstone
                await cur.execute(self._sql.deleted, [stream_id])
                found = await cur.fetchone()
                deleted = found[0] if found else None
        if deleted is not None:
            raise StreamDeleted(stream_id, hard=deleted == "hard")
        if rows and self._bound is None:  # committed: a transaction's own rows may roll back
            self._seen.add(stream_id, max(rows[0][2], rows[-1][2]))
        return rows

    async def _read_all(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        rows, scanned_to, _ = await self._read_below(after, limit, event_types, stream_prefix)
        return rows, scanned_to

    async def _read_below(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
        fence: int | None = None,
    ) -> tuple[list[Row], int | None, int]:
        """Read a page below ``fence`` (asking the fence function if ``None``); return it too.

        A fence stays valid: every position below it is final (committed or
        rolled back), and later appends take later blocks. So the pages of one
        walk share the first page's fence, and ask for it once.
        """
        query = self._sql.read_all(event_types is not None, stream_prefix is not None)
        params: list[Any] = [after, fence]
        if event_types is not None:
            params.append(list(event_types))
        if stream_prefix is not None:
            params.append(stream_prefix)
        params.append(limit)
        async with self._statements() as cur:
            if fence is None:
                fence = params[1] = await self._read_fence(cur)
            await cur.execute(query, params, binary=True)
            # Plain tuples in Row's column order: _decode reads them by index.
            rows: list[Any] = await cur.fetchall()
        return rows, (rows[-1][3] if len(rows) == limit else None), fence

    async def _read_pages(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> AsyncGenerator[list[Row], None]:
        """Yield ``read_all``'s pages, fetching the next one while the caller decodes this one.

        Every page reads below the fence the first page asked for (see
        ``_read_below``): the walk ends at the log's end as it was then. A
        bound store (a transaction) reads page by page: its one connection
        runs the caller's statements too.
        """
        if self._bound is not None:
            async with contextlib.aclosing(
                super()._read_pages(after, limit, event_types, stream_prefix)
            ) as pages:
                async for rows in pages:
                    yield rows
            return
        loop = asyncio.get_running_loop()
        fetch = loop.create_task(self._traced_read(after, limit, event_types, stream_prefix, None))
        try:
            while True:
                # Shielded: cancelling this await would cancel the fetch mid-statement.
                rows, scanned_to, fence = await asyncio.shield(fetch)
                if scanned_to is None:
                    yield rows
                    return
                fetch = loop.create_task(
                    self._traced_read(scanned_to, limit, event_types, stream_prefix, fence)
                )
                await asyncio.sleep(0)  # let it send its query before this page is decoded
                yield rows
        finally:
            if not fetch.done():  # the caller stopped early: let the fetch end (one page)
                # Cancelling it mid-statement would make psycopg close its connection.
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([fetch])
                if not fetch.cancelled():
                    fetch.exception()  # retrieved: it no longer matters

    async def _traced_read(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
        fence: int | None,
    ) -> tuple[list[Row], int | None, int]:
        """Run one traced ``_read_below``, as ``_read_page`` runs ``_read_all``."""
        with self._telemetry.read("read_all", None):
            return await self._read_below(after, limit, event_types, stream_prefix, fence)

    async def _log_position(self) -> int:
        async with self._statements() as cur:
            await cur.execute(self._sql.log_position, [await self._read_fence(cur)])
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _count_events(
        self,
        after: int,
        before: int | None,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> int:
        query = self._sql.count_events(event_types is not None, stream_prefix is not None)
        params: list[Any] = [after, before, 0]
        if event_types is not None:
            params.append(list(event_types))
        if stream_prefix is not None:
            params.append(stream_prefix)
        async with self._statements() as cur:
            params[2] = await self._read_fence(cur)
            await cur.execute(query, params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _stream_version(self, stream_id: str) -> int:
        async with self._statements() as cur:
            await cur.execute(self._sql.stream_state, {"id": stream_id})
            deleted, version = await cur.fetchone() or (None, None)
        return 0 if deleted is not None or version is None else int(version)

    # -- the read fence ----------------------------------------------------------

    async def fence_status(self) -> FenceStatus:
        """Return where the read fence stands and which append in flight holds it.

        For health checks and ``uno doctor``: ``held`` with a large
        ``transaction_age`` means an appending transaction left open keeps
        every reader of this store waiting (see ``FenceStatus``).
        """
        async with self._statements() as cur:
            await cur.execute(self._sql.fence_status)
            row = await cur.fetchone()
        assert row is not None  # the statement returns one row
        return FenceStatus.from_row(row)
