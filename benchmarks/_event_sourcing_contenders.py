"""The event sourcing benchmark's contenders: uno and eventsourcing, behind blocking facades.

Every method runs a whole timed batch and returns when it is done, so that
the harness times both libraries alike. uno's side runs each batch on one
``asyncio.Runner`` kept open for the whole benchmark (``runner.run`` per
batch); eventsourcing's is blocking code, called directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import Tracking
from eventsourcing.projection import ProjectionRunner as PeerProjectionRunner

from benchmarks._event_sourcing_model import (
    CATCH_UP_NAME,
    Cart,
    CartOpened,
    CartTotals,
    Item,
    ItemAdded,
    PeerCart,
    PeerCarts,
    PeerCartTotals,
    PeerTotalsView,
)
from uno.event_sourcing import ProjectionRunner, Repository, register_types
from uno.event_storage import ClosableEventStore, open_event_store
from uno.events import NO_STREAM, Event, EventRegistry

__all__ = ["CATCH_UP_TIMEOUT", "PAGE", "PeerContender", "UnoContender"]

PAGE = 500
"""Events per query when reading the log: eventsourcing's page, and uno's runner batch."""
CATCH_UP_TIMEOUT = 600.0
"""Seconds a catch-up may take before the benchmark gives up."""


class UnoContender:
    """uno's ``Repository`` and ``ProjectionRunner`` on a store opened by ``open_event_store``."""

    def __init__(
        self, runner: asyncio.Runner, url: str, items: Sequence[Item], **options: Any
    ) -> None:
        self._runner = runner
        self._items = items
        registry = register_types(EventRegistry())
        registry.register(CartOpened)
        registry.register(ItemAdded)
        self._exit = AsyncExitStack()
        self._store: ClosableEventStore = runner.run(
            self._exit.enter_async_context(open_event_store(url, registry=registry, **options))
        )
        self._carts = Repository(self._store, Cart)

    def close(self) -> None:
        """Close the store."""
        self._runner.run(self._exit.aclose())

    def save_new(self, count: int, length: int) -> list[str]:
        """Open ``count`` new carts of ``length`` events, saving each once; return their ids."""
        return self._runner.run(self._save_new(count, length))

    def load(self, ids: Sequence[str], times: int) -> int:
        """Load the carts ``times`` loads in all, round-robin; return the items seen."""
        return self._runner.run(self._load(ids, times))

    def append_events(self, count: int, length: int) -> None:
        """Baseline: append the same events as ``save_new`` through the store, no aggregate."""
        self._runner.run(self._append_events(count, length))

    def read_events(self, ids: Sequence[str], times: int) -> int:
        """Baseline: read the carts' streams and fold them by hand; return the items seen."""
        return self._runner.run(self._read_events(ids, times))

    def catch_up(self) -> dict[str, int]:
        """Run ``CartTotals`` from position 0 until it has caught up; return its totals.

        The checkpoint is set back to 0 first (a few ms, inside the timing), so
        every run reads the whole log.
        """
        return self._runner.run(self._catch_up())

    def read_all_and_apply(self) -> dict[str, int]:
        """Baseline: read the whole log ``PAGE`` events a query and sum the totals by hand."""
        return self._runner.run(self._read_all_and_apply())

    async def _save_new(self, count: int, length: int) -> list[str]:
        items, save, ids = self._items, self._carts.save, []
        for n in range(count):
            cart = Cart(str(uuid4()))
            cart.open(f"owner-{n}")
            for i in range(length - 1):
                item = items[i % len(items)]
                cart.add_item(item.sku, item.quantity, item.unit_price_cents)
            await save(cart)
            ids.append(cart.id)
        return ids

    async def _load(self, ids: Sequence[str], times: int) -> int:
        get = self._carts.get
        return sum([(await get(ids[n % len(ids)])).items for n in range(times)])

    async def _append_events(self, count: int, length: int) -> None:
        items, append = self._items, self._store.append
        for n in range(count):
            events: list[Event] = [CartOpened(owner=f"owner-{n}")]
            for i in range(length - 1):
                item = items[i % len(items)]
                events.append(
                    ItemAdded(
                        sku=item.sku, quantity=item.quantity, unit_price_cents=item.unit_price_cents
                    )
                )
            await append(Cart.stream_id_for(str(uuid4())), events, expected_version=NO_STREAM)

    async def _read_events(self, ids: Sequence[str], times: int) -> int:
        read, seen = self._store.read_stream, 0
        for n in range(times):
            total = 0
            for recorded in await read(Cart.stream_id_for(ids[n % len(ids)])):
                data = recorded.data
                if isinstance(data, ItemAdded):
                    seen += 1
                    total += data.quantity * data.unit_price_cents
        return seen

    async def _catch_up(self) -> dict[str, int]:
        await self._store.save_checkpoint(CATCH_UP_NAME, 0)
        projection = CartTotals()
        async with ProjectionRunner(self._store, [projection], batch_size=PAGE) as runner:
            await runner.wait_until_caught_up(timeout=CATCH_UP_TIMEOUT)
        return projection.totals

    async def _read_all_and_apply(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        async for recorded in self._store.read_all(batch_size=PAGE):
            data = recorded.data
            if isinstance(data, ItemAdded):
                totals[recorded.stream_id] += data.quantity * data.unit_price_cents
            elif isinstance(data, CartOpened):
                totals[recorded.stream_id] = 0
        return totals


class PeerContender:
    """eventsourcing's ``Application`` (``PeerCarts``) and its ``ProjectionRunner``.

    ``env`` configures the application as its environment variables would
    (``PERSISTENCE_MODULE``, ``SQLITE_DBNAME``, ``POSTGRES_*``); snapshots and
    the aggregate cache stay off, their defaults.
    """

    def __init__(self, env: Mapping[str, str], items: Sequence[Item]) -> None:
        self._env = dict(env)
        self._items = items
        self.app = PeerCarts(env=self._env)

    def close(self) -> None:
        """Close the application's connections."""
        self.app.close()

    def save_new(self, count: int, length: int) -> list[UUID]:
        """Open ``count`` new carts of ``length`` events, saving each once; return their ids."""
        items, save, ids = self._items, self.app.save, []
        for n in range(count):
            cart = PeerCart(owner=f"owner-{n}")
            for i in range(length - 1):
                item = items[i % len(items)]
                cart.add_item(item.sku, item.quantity, item.unit_price_cents)
            save(cart)
            ids.append(cart.id)
        return ids

    def load(self, ids: Sequence[UUID], times: int) -> int:
        """Load the carts ``times`` loads in all, round-robin; return the items seen."""
        get = self.app.repository.get
        seen = 0
        for n in range(times):
            cart: PeerCart = get(ids[n % len(ids)])
            seen += cart.items
        return seen

    def catch_up(self) -> dict[UUID, int]:
        """Run ``PeerCartTotals`` under eventsourcing's ``ProjectionRunner``; return its totals.

        The runner makes its own application from ``env`` and a fresh view
        (in memory, ``eventsourcing.popo``), so every run reads the whole log.
        The clock stops when the view has tracked the last event of the log.
        """
        PeerTotalsView.target = self.app.recorder.max_notification_id() or 0
        env = {**self._env, "PEERCARTTOTALS_PERSISTENCE_MODULE": "eventsourcing.popo"}
        with PeerProjectionRunner(
            application_class=PeerCarts,
            projection_class=PeerCartTotals,
            view_class=PeerTotalsView,
            env=env,
        ) as runner:
            view = runner.projection.view
            while not view.done.wait(0.05):
                if runner.is_interrupted.is_set():
                    runner.run_forever(timeout=0)  # raises the processing thread's error
                    raise RuntimeError("eventsourcing's projection runner stopped early")
            return view.totals

    def pull_and_apply(self) -> dict[UUID, int]:
        """Read the log ``PAGE`` notifications a query, map and apply each: no runner.

        What eventsourcing's runner does, minus its threads: for a recorder that
        cannot ``subscribe`` (SQLite), this is how its events reach a projection.
        """
        recorder, to_event = self.app.recorder, self.app.mapper.to_domain_event
        projection = PeerCartTotals(view=PeerTotalsView())
        process, name = projection.process_event, self.app.name
        start = 0
        while True:
            page = recorder.select_notifications(start, PAGE, inclusive_of_start=False)
            for notification in page:
                process(to_event(notification), Tracking(name, notification.id))
            if len(page) < PAGE:
                return projection.view.totals
            start = page[-1].id
