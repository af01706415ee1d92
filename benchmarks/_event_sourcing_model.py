"""The event sourcing benchmark's domain, written twice: for uno and for eventsourcing.

A shopping cart is opened, then items are added to it; its state is the
owner, the number of items and the total in cents. A projection keeps every
cart's total in a dict. Both libraries get the same events with the same
fields, in their own idiom: uno ``Event`` structs applied by ``@applies``
methods, eventsourcing's ``@event``-decorated methods.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate as PeerAggregate
from eventsourcing.domain import event
from eventsourcing.persistence import Tracking
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.projection import Projection as PeerProjection

from uno.event_sourcing import Aggregate, Projection, applies, handles
from uno.events import Event, RecordedEvent

__all__ = [
    "CATCH_UP_NAME",
    "Cart",
    "CartOpened",
    "CartTotals",
    "Item",
    "ItemAdded",
    "PeerCart",
    "PeerCartTotals",
    "PeerCarts",
    "PeerTotalsView",
    "items",
]

CATCH_UP_NAME = "cart-totals"
"""The name of uno's projection, and of its checkpoint."""


@dataclass(frozen=True)
class Item:
    """What one "item added" event carries."""

    sku: str
    quantity: int
    unit_price_cents: int


def items(count: int) -> tuple[Item, ...]:
    """Return ``count`` varied items, the same on every run."""
    rng = random.Random(20_251_122)
    return tuple(
        Item(
            sku=f"SKU-{rng.randrange(10**8):08d}",
            quantity=rng.randrange(1, 10),
            unit_price_cents=rng.randrange(100, 100_000),
        )
        for _ in range(count)
    )


# -- uno -----------------------------------------------------------------------


class CartOpened(Event):
    """uno: a cart was opened (the first event of every cart)."""

    event_type = "bench.CartOpened"

    owner: str


class ItemAdded(Event):
    """uno: an item was added to a cart."""

    event_type = "bench.CartItemAdded"

    sku: str
    quantity: int
    unit_price_cents: int


class Cart(Aggregate):
    """uno: the cart aggregate."""

    category = "cart"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.items = 0
        self.total_cents = 0

    def open(self, owner: str) -> None:
        """Record that the cart was opened by ``owner``."""
        self.record(CartOpened(owner=owner))

    def add_item(self, sku: str, quantity: int, unit_price_cents: int) -> None:
        """Record an item added to the cart."""
        self.record(ItemAdded(sku=sku, quantity=quantity, unit_price_cents=unit_price_cents))

    @applies
    def _opened(self, event: CartOpened) -> None:
        self.owner = event.owner

    @applies
    def _item_added(self, event: ItemAdded) -> None:
        self.items += 1
        self.total_cents += event.quantity * event.unit_price_cents


class CartTotals(Projection):
    """uno: every cart's total, by stream, in a dict (at-least-once)."""

    name = CATCH_UP_NAME

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    @handles
    async def _opened(self, event: RecordedEvent[CartOpened]) -> None:
        self.totals[event.stream_id] = 0

    @handles
    async def _item_added(self, event: RecordedEvent[ItemAdded]) -> None:
        data = event.data
        self.totals[event.stream_id] += data.quantity * data.unit_price_cents

    async def reset(self) -> None:
        """Forget every total."""
        self.totals.clear()


# -- eventsourcing -------------------------------------------------------------


class PeerCart(PeerAggregate):
    """eventsourcing: the cart aggregate; its creation is the "opened" event."""

    class Opened(PeerAggregate.Created):
        """A cart was opened."""

        owner: str

    class ItemAdded(PeerAggregate.Event):
        """An item was added to a cart."""

        sku: str
        quantity: int
        unit_price_cents: int

    @event(Opened)
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.items = 0
        self.total_cents = 0

    @event(ItemAdded)
    def add_item(self, sku: str, quantity: int, unit_price_cents: int) -> None:
        """Add an item (triggers the ``ItemAdded`` event and applies it)."""
        self.items += 1
        self.total_cents += quantity * unit_price_cents


class PeerCarts(Application[UUID]):
    """eventsourcing: the application that stores carts (snapshots and cache off)."""


class PeerTotalsView(POPOTrackingRecorder):
    """eventsourcing: the carts' totals in a dict, with the position in memory.

    ``done`` is set once the event at ``PeerTotalsView.target`` is tracked, so
    that the benchmark stops the clock when the last event is applied rather
    than at the next poll of the recorder's ``wait`` (100 to 800 ms apart).
    """

    target: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[UUID, int] = {}
        self.done = threading.Event()

    def open_cart(self, cart: UUID, tracking: Tracking) -> None:
        """Start the cart's total at 0 and track the event, atomically."""
        with self._database_lock:
            self._assert_tracking_uniqueness(tracking)
            self._insert_tracking(tracking)
            self.totals[cart] = 0
        self._check_done(tracking)

    def add_to_total(self, cart: UUID, cents: int, tracking: Tracking) -> None:
        """Add to the cart's total and track the event, atomically."""
        with self._database_lock:
            self._assert_tracking_uniqueness(tracking)
            self._insert_tracking(tracking)
            self.totals[cart] += cents
        self._check_done(tracking)

    def _check_done(self, tracking: Tracking) -> None:
        if tracking.notification_id >= self.target:
            self.done.set()


class PeerCartTotals(PeerProjection[PeerTotalsView]):
    """eventsourcing: the projection that fills ``PeerTotalsView``."""

    name = "PeerCartTotals"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events of other types."""

    @process_event.register
    def _opened(self, domain_event: PeerCart.Opened, tracking: Tracking) -> None:
        self.view.open_cart(domain_event.originator_id, tracking)

    @process_event.register
    def _item_added(self, domain_event: PeerCart.ItemAdded, tracking: Tracking) -> None:
        cents = domain_event.quantity * domain_event.unit_price_cents
        self.view.add_to_total(domain_event.originator_id, cents, tracking)
