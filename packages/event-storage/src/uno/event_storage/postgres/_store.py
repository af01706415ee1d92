"""The PostgreSQL event store (``postgresql://``), on psycopg 3 and psycopg_pool.

Needs the ``[postgres]`` extra. How global order is kept without a table lock
is explained in ``postgres._schema``; the guarantees are listed in
docs/guide/event-store-guarantees.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import monotonic
from typing import Any, ClassVar, Self

import anyio
import anyio.lowlevel
import psycopg
import psycopg_pool
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from uno.event_storage._prepared import check_expected_version
from uno.event_storage._subscription import Notifier
from uno.event_storage.exceptions import (
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
    StreamDeleted,
)
from uno.event_storage.postgres._append_groups import AppendGroups
from uno.event_storage.postgres._appends import SeenVersions
from uno.event_storage.postgres._arrays import BinaryArray
from uno.event_storage.postgres._connections import (
    UNAVAILABLE,
    BorrowedConnections,
    failure_reason,
    open_transaction,
)
from uno.event_storage.postgres._fence import FenceWatch
from uno.event_storage.postgres._leases import PostgresLeaseStore
from uno.event_storage.postgres._migrations import MIGRATIONS
from uno.event_storage.postgres._reads import ReadingStore
from uno.event_storage.postgres._schema import Names, migration_lock_key
from uno.event_storage.postgres._statements import Statements
from uno.events import (
    EventRegistry,
    ExpectedVersion,
)

__all__ = ["PostgresEventStore"]

logger = logging.getLogger("uno.event_storage.postgres")


class PostgresEventStore(ReadingStore):
    """An event store in PostgreSQL (13 or newer).

    Open it with ``open_event_store("postgresql://user@host/db", registry=...)``
    or ``await PostgresEventStore.from_url(...)``. Writers to different streams
    run in parallel; readers of the global log see events in one order that
    respects every stream's order, never skip a late commit, and never see a
    rolled-back event.

    Args:
        registry: The event classes and upcasters.
        pool: An open ``psycopg_pool.AsyncConnectionPool`` whose connections use
            autocommit and the UTC time zone (``from_url`` makes one).
        schema: The PostgreSQL schema of the store's tables.
        table_prefix: Prefix of the store's tables, so stores can share a schema.
        notify: After commits, wake subscribers in other processes with
            ``NOTIFY`` (sent outside the writers' transactions, so it does not
            serialize their commits). Without it they poll.
        notify_delay: Least seconds between two ``NOTIFY``: the first commit
            after a quiet spell is announced at once, and the commits of the
            next ``notify_delay`` together at its end, so a busy writer sends
            one per ``notify_delay`` and remote subscribers hear of its events
            up to that much later.
        group_commit: Most autocommit appends under way at once before the
            store groups them: an append that arrives while this many are under
            way waits, and the appends waiting when one ends share one
            transaction (each still succeeds or fails alone). Only appends
            that read nothing first are grouped: a version the store saw
            committed, or a new stream. 0 turns grouping off.
        fence_warning_after: Seconds an append in flight may hold readers back
            before the store logs a warning naming its backend (looked at
            while subscriptions wait for events); ``None`` never warns. See
            ``fence_status()``.
        owns_pool: Close the pool when the store closes.
        **options: ``serializer``, ``max_event_size``, ``poll_interval``.
    """

    backend: ClassVar[str] = "postgresql"

    def __init__(
        self,
        registry: EventRegistry,
        *,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        schema: str = "public",
        table_prefix: str = "uno_",
        notify: bool = True,
        notify_delay: float = 0.05,
        group_commit: int = 2,
        fence_warning_after: float | None = 10.0,
        owns_pool: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(registry, **options)
        if notify_delay < 0:
            raise StoreConfigurationError(f"notify_delay must be >= 0, got {notify_delay}")
        if type(group_commit) is not int or group_commit < 0:
            raise StoreConfigurationError(
                f"group_commit must be an int >= 0 (0 turns grouping off), got {group_commit!r}"
            )
        self.names = Names.of(schema, table_prefix)
        self.notify = notify
        self.notify_delay = notify_delay
        self._pool = pool
        self._connections = BorrowedConnections(pool)
        self._owns_pool = owns_pool
        self._bound: AsyncConnection[TupleRow] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._announce_again = False
        self._sql = Statements(self.names)
        self._fence_watch = FenceWatch(fence_warning_after)
        self._locked: set[str] = set()  # streams a bound store's transaction has locked
        self._seen = SeenVersions()
        self._groups = (
            AppendGroups(group_commit, self._append_single, self._append_together)
            if group_commit
            else None
        )
        # LISTEN needs a connection of its own, outside the pool.
        self._conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        registry: EventRegistry,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        auto_migrate: bool = False,
        **options: Any,
    ) -> Self:
        """Open a store with a new connection pool for a ``postgresql://`` URL.

        Args:
            url: A libpq connection URL (``postgres://`` works too).
            registry: The event classes and upcasters.
            pool_min_size: Connections kept open.
            pool_max_size: Most connections at once (concurrent writers).
            connect_timeout: Seconds to wait for the first connection.
            auto_migrate: Create or upgrade the schema on open.
            **options: Passed to the constructor (schema, table_prefix, notify, ...).

        Raises:
            StoreUnavailable: the database cannot be reached within ``connect_timeout``.
            SchemaNotMigrated: the schema is missing or old and ``auto_migrate`` is off.
        """
        if pool_min_size < 0 or pool_max_size < max(1, pool_min_size):
            raise StoreConfigurationError(
                f"need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1, got "
                f"{pool_min_size} and {pool_max_size}"
            )
        conninfo = "postgresql://" + url.partition("://")[2]
        # Keep the URL's own server options, and read timestamps in UTC.
        given = conninfo_to_dict(conninfo).get("options")
        server_options = f"{given} -c TimeZone=UTC" if given else "-c TimeZone=UTC"
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=pool_min_size,
            max_size=pool_max_size,
            open=False,
            timeout=connect_timeout,
            kwargs={"autocommit": True, "prepare_threshold": 0, "options": server_options},
            name="uno.event_storage",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except UNAVAILABLE as exc:
            await pool.close()
            raise StoreUnavailable("postgresql", failure_reason(exc)) from exc
        store = cls(registry, pool=pool, owns_pool=True, **options)
        try:
            if auto_migrate:
                await store.migrate()
            else:
                await store.check_schema()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Stop listening, and close the pool if the store opened it."""
        await super().close()
        for task in (self._listener, self._announcer):
            if task is not None and not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(task, return_exceptions=True)
        if self._bound is None:
            if self._groups is not None:
                with anyio.CancelScope(shield=True):
                    await self._groups.drain()
            await self._connections.close()
            if self._owns_pool:
                await self._pool.close()

    # -- schema ----------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the schema; safe to run from several processes at once."""
        with self._translated():
            async with self._connections.borrow() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [migration_lock_key(self.names)],
                )
                await conn.execute(self.names.render("CREATE SCHEMA IF NOT EXISTS {schema}"))
                await conn.execute(
                    self.names.render(
                        "CREATE TABLE IF NOT EXISTS {migrations} (version integer PRIMARY KEY, "
                        "description text NOT NULL, "
                        "applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                    )
                )
                cursor = await conn.execute(self.names.render("SELECT version FROM {migrations}"))
                applied = {version for (version,) in await cursor.fetchall()}
                for version, description, template in MIGRATIONS:
                    if version in applied:
                        continue
                    await conn.execute(self.names.render(template), prepare=False)
                    await conn.execute(
                        self.names.render(
                            "INSERT INTO {migrations} (version, description) VALUES (%s, %s)"
                        ),
                        [version, description],
                    )
                    logger.info(
                        "migrated event store schema",
                        extra={"schema": self.names.schema, "version": version},
                    )

    async def schema_version(self) -> int:
        """Return the newest applied migration, 0 when the schema is missing."""
        async with self._statements() as cur:
            await cur.execute(
                "SELECT to_regclass(%s) IS NOT NULL", [self.names.table("migrations")]
            )
            row = await cur.fetchone()
            if row is None or not row[0]:
                return 0
            await cur.execute(
                self.names.render("SELECT coalesce(max(version), 0) FROM {migrations}")
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def check_schema(self) -> None:
        """Raise ``SchemaNotMigrated`` unless every migration is applied."""
        have, want = await self.schema_version(), MIGRATIONS[-1][0]
        if have < want:
            raise SchemaNotMigrated(f"schema {self.names.schema!r}", have, want)

    # -- leases ----------------------------------------------------------------

    def lease_store(self, *, check_timeout: float = 5.0) -> PostgresLeaseStore:
        """Return leases shared by every process that opens this store (schema and prefix).

        Each held lease is a session-level advisory lock on a connection of its
        own, so a holder that dies or loses its connection loses the lease.

        Raises:
            StoreConfigurationError: the pool's connection string is unknown
                (a pool built with a conninfo callable).
        """
        if not self._conninfo:
            raise StoreConfigurationError(
                "leases need the database's connection string, and this store's pool has none: "
                "build PostgresLeaseStore(conninfo, namespace=...) yourself"
            )
        return PostgresLeaseStore(
            self._conninfo,
            namespace=f"uno.event_storage:{self.names.schema}.{self.names.prefix}",
            check_timeout=check_timeout,
        )

    # -- connections and transactions ------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresEventStore]:
        """Open a transaction and yield a store bound to it.

        Everything done through the yielded store, and through its
        ``connection`` (read models, outbox rows...), commits together when the
        block ends, or rolls back if it raises. An error inside the block leaves
        the transaction aborted: let it propagate. Inside the block, append to a
        stream the transaction already appended to only through the yielded
        store: the task's own append through the outer store would wait for this
        transaction's lock forever, so it is refused.

        Raises:
            StoreConfigurationError: called on a bound store (transactions do not nest).
        """
        if self._bound is not None:
            raise StoreConfigurationError(
                "transactions do not nest: use the bound store you already have"
            )
        with self._translated():
            # The caller's code runs on this connection and may change its session:
            # it goes back to the pool (and its reset), not to the free-list.
            async with self._connections.borrow(reuse=False) as conn:
                # Commit or roll back shielded: a cancelled rollback (anyio cancels every
                # await of a cancelled scope) makes psycopg close the connection.
                transaction = conn.transaction()
                await transaction.__aenter__()
                bound = self._bind(conn)
                token = open_transaction.set((self, bound._locked))
                try:
                    yield bound
                    # The store's statements are shielded: a cancellation that came
                    # during them is delivered here, and rolls the work back.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                except BaseException as exc:
                    with anyio.CancelScope(shield=True):
                        suppress = await transaction.__aexit__(type(exc), exc, exc.__traceback__)
                    if not suppress:  # psycopg's Rollback ends the block quietly
                        raise
                else:
                    with anyio.CancelScope(shield=True):
                        await transaction.__aexit__(None, None, None)
                finally:
                    open_transaction.reset(token)
        self._committed()

    def using(self, connection: AsyncConnection[Any]) -> PostgresEventStore:
        """Return a store that works inside ``connection``'s current transaction.

        The caller commits or rolls back; the store never does. The connection
        must not be in autocommit mode. Subscribers learn of the events at their
        next poll (``poll_interval``).
        """
        if connection.autocommit:
            raise StoreConfigurationError(
                "store.using(connection) needs a connection that is not in autocommit mode, "
                "so that its appends join the caller's transaction"
            )
        BinaryArray.register(connection)
        return self._bind(connection)

    def _bind(self, connection: AsyncConnection[Any]) -> PostgresEventStore:
        bound = copy.copy(self)
        bound._bound = connection
        bound._owns_pool = False
        bound._listener = bound._announcer = None
        bound._notifier = Notifier()  # closing the bound store must not end the parent's reads
        bound._locked = set()
        bound._seen = SeenVersions()  # never filled: a bound store sees uncommitted rows
        return bound

    @property
    def connection(self) -> AsyncConnection[Any]:
        """The connection a bound store (from ``transaction()``) works in."""
        if self._bound is None:
            raise StoreConfigurationError(
                "only a store from store.transaction() or store.using(conn) has a connection"
            )
        return self._bound

    # -- deletion, metadata, snapshots, checkpoints ------------------------------

    async def _delete_stream(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        self._seen.forget(stream_id)  # tidiness: appends check for deletion anyway
        with anyio.CancelScope(shield=True), self._translated():
            async with self._atomic() as conn:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [stream_id]
                )
                while True:
                    cursor = await conn.execute(self._sql.stream_state, {"id": stream_id})
                    deleted, version = await cursor.fetchone() or (None, None)
                    if deleted == "hard":
                        return
                    # Lock-free appends take no lock: a fence row holding the next
                    # version waits for one that holds it, and makes later ones wait
                    # for this transaction, which they then see (and undo themselves).
                    cursor = await conn.execute(
                        self._sql.fence, {"id": stream_id, "v": (version or 0) + 1}
                    )
                    fence = await cursor.fetchone()
                    if fence is not None:
                        break
                    # An append took that version meanwhile: read the stream again.
                try:
                    check_expected_version(stream_id, expected, version or 0)
                finally:
                    # Inside a caller's transaction the fence must not outlive this call.
                    await conn.execute(self._sql.erase_fence, [fence[0]])
                if hard:
                    await conn.execute(self._sql.erase_events, [stream_id])
                    await conn.execute(self._sql.erase_snapshots, [stream_id])
                await conn.execute(self._sql.mark_deleted, [stream_id, "hard" if hard else "soft"])

    async def _get_stream_metadata(self, stream_id: str) -> bytes | None:
        async with self._statements() as cur:
            await cur.execute(self._sql.get_metadata, [stream_id])
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def _set_stream_metadata(self, stream_id: str, metadata: bytes) -> None:
        async with self._statements() as cur:
            await cur.execute(self._sql.set_metadata, [stream_id, metadata])
            if await cur.fetchone() is None:
                raise StreamDeleted(stream_id, hard=True)

    async def _save_snapshot(
        self, stream_id: str, version: int, event_type: str, event_version: int, data: bytes
    ) -> None:
        async with self._statements() as cur:
            await cur.execute(
                self._sql.save_snapshot,
                {
                    "id": stream_id,
                    "v": version,
                    "t": event_type,
                    "tv": event_version,
                    "d": data,
                },
            )
            deleted = await cur.fetchone()
        if deleted is not None:
            raise StreamDeleted(stream_id, hard=deleted[0] == "hard")

    async def _load_snapshot(
        self, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        async with self._statements() as cur:
            await cur.execute(self._sql.load_snapshot, [stream_id, at_or_below, at_or_below])
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    async def _load_checkpoint(self, consumer: str) -> int | None:
        async with self._statements() as cur:
            await cur.execute(self._sql.load_checkpoint, [consumer])
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def _save_checkpoint(self, consumer: str, position: int) -> None:
        async with self._statements() as cur:
            await cur.execute(self._sql.save_checkpoint, [consumer, position])

    # -- waking subscriptions --------------------------------------------------

    async def _wait_for_events(self, ticket: anyio.Event, max_wait: float) -> None:
        if (
            self.notify
            and self._bound is None
            and self._conninfo
            and (self._listener is None or self._listener.done())
        ):
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        if self._bound is None and self._fence_watch.due(monotonic()):
            with contextlib.suppress(StoreUnavailable):  # the next read says so
                self._fence_watch.saw(await self.fence_status(), self.names.schema)
        await super()._wait_for_events(ticket, max_wait)

    async def _listen(self) -> None:
        """Wake subscriptions on NOTIFY from any process; reconnect when the link drops."""
        channel = sql.SQL("LISTEN {}").format(sql.Identifier(self.names.channel))
        while not self._notifier.closed:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(channel)
                    self._notifier.notify()  # events may have come while (re)connecting
                    async for _ in conn.notifies():
                        self._notifier.notify()
            except UNAVAILABLE:
                logger.warning("lost the LISTEN connection; subscribers poll until it is back")
                await anyio.sleep(self.poll_interval)
