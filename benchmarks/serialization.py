"""Serialization: one event's data to its stored form and back.

Contenders, each round-tripping the same 100,000 deposits:

* uno's ``JsonSerializer`` (and ``MsgPackSerializer``) through an ``EventRegistry``;
* the ``eventsourcing`` library's ``Mapper`` with a ``JSONTranscoder``;
* hand-written msgspec code on the same event class: the floor uno builds on.

Then the encoding alone, uno's ``encode`` (which refuses what would not decode
back: a value of another type than its field's, a NaN) against msgspec's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from benchmarks._harness import Settings, Timing, compare, machine_facts, markdown_table, verdict
from uno.events import Event, EventRegistry, JsonSerializer, MsgPackSerializer

__all__ = ["MoneyDeposited", "MoneyDepositedES", "run"]

EVENTS = 100_000
CHECKED = 1_000  # events whose round trip is compared with the original before timing
PEER_TARGET = 3.0  # eventsourcing's time / uno's time, at least
FLOOR_TARGET = 1.3  # uno's time / hand-written msgspec's time, at most
ENCODE_TARGET = 1.5  # uno's encode (with its read-back check) / msgspec's encode, at most

RAW_JSON = "msgspec.json, hand-written (floor)"
UNO_JSON = "uno `JsonSerializer`"
UNO_MSGPACK = "uno `MsgPackSerializer`"
RAW_MSGPACK = "msgspec.msgpack, hand-written (floor)"
EVENTSOURCING = "eventsourcing `Mapper` + `JSONTranscoder`"
ENCODE_RAW_JSON = "encode only: msgspec.json, hand-written"
ENCODE_UNO_JSON = "encode only: uno `JsonSerializer`"
ENCODE_RAW_MSGPACK = "encode only: msgspec.msgpack, hand-written"
ENCODE_UNO_MSGPACK = "encode only: uno `MsgPackSerializer`"


class MoneyDeposited(Event):
    """The uno event: what the hand-written msgspec code encodes too."""

    event_type = "bank.MoneyDeposited"

    account_id: UUID
    amount: Decimal
    currency: str
    reference: str
    at: datetime


@dataclass(frozen=True)
class MoneyDepositedES(DomainEvent):
    """The same deposit as an eventsourcing event, which adds its originator and timestamp."""

    account_id: UUID
    amount: Decimal
    currency: str
    reference: str
    at: datetime


@dataclass(frozen=True)
class _Contender:
    """One way to round-trip events, with the events it takes."""

    label: str
    events: Sequence[Any]
    round_trips: Callable[[Sequence[Any]], object]
    """Round-trips every event given and returns the last one decoded."""
    stored_size: Callable[[Any], int]
    """Returns the length of one event's stored bytes."""

    def check(self) -> None:
        """Raise if a round trip does not give back an equal event."""
        for event in self.events[:CHECKED]:
            decoded = self.round_trips([event])
            if decoded != event:
                raise AssertionError(f"{self.label}: {event!r} came back as {decoded!r}")

    def mean_size(self) -> float:
        """Return the mean length of the stored bytes of the checked events."""
        sample = self.events[:CHECKED]
        return sum(self.stored_size(event) for event in sample) / len(sample)


def run(settings: Settings) -> str:
    """Time every contender and return the markdown section of the results."""
    deposits = _deposits(EVENTS)
    contenders = _contenders(deposits)
    for contender in contenders:
        contender.check()
    cases: dict[str, Callable[[], object]] = {
        c.label: partial(c.round_trips, c.events) for c in contenders
    }
    cases.update(_encode_cases(deposits))
    timings = {t.label: t for t in compare(cases, ops=EVENTS, repeats=settings.repeats)}
    return _report(contenders, timings, settings)


def _encode_cases(deposits: list[MoneyDeposited]) -> dict[str, Callable[[], object]]:
    """Return the encode-only cases: uno's serializers and msgspec's encoders."""
    registry = EventRegistry()
    registry.register(MoneyDeposited)
    return {
        ENCODE_RAW_JSON: partial(_encodes, msgspec.json.Encoder().encode, deposits),
        ENCODE_UNO_JSON: partial(_encodes, JsonSerializer(registry).encode, deposits),
        ENCODE_RAW_MSGPACK: partial(_encodes, msgspec.msgpack.Encoder().encode, deposits),
        ENCODE_UNO_MSGPACK: partial(_encodes, MsgPackSerializer(registry).encode, deposits),
    }


def _encodes(encode: Callable[[Any], bytes], events: Sequence[MoneyDeposited]) -> object:
    """Encode each event; return the last bytes."""
    data = b""
    for event in events:
        data = encode(event)
    return data


def _deposits(count: int) -> list[MoneyDeposited]:
    """Return ``count`` varied deposits, the same on every run."""
    rng = random.Random(20_250_101)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    currencies = ("EUR", "USD", "GBP", "CHF", "JPY")
    return [
        MoneyDeposited(
            account_id=UUID(int=rng.getrandbits(128), version=4),
            amount=Decimal(rng.randrange(1, 10_000_000)).scaleb(-2),
            currency=rng.choice(currencies),
            reference=f"INV-{rng.randrange(10**8):08d}",
            at=start + timedelta(microseconds=rng.randrange(366 * 86_400 * 10**6)),
        )
        for _ in range(count)
    ]


def _contenders(deposits: list[MoneyDeposited]) -> list[_Contender]:
    registry = EventRegistry()
    registry.register(MoneyDeposited)
    uno_json, uno_msgpack = JsonSerializer(registry), MsgPackSerializer(registry)
    mapper = _eventsourcing_mapper()
    peer_events = [_as_eventsourcing(deposit, number) for number, deposit in enumerate(deposits, 1)]
    return [
        _Contender(
            RAW_JSON,
            deposits,
            partial(_raw_round_trips, msgspec.json.Encoder(), msgspec.json.Decoder(MoneyDeposited)),
            lambda event: len(msgspec.json.encode(event)),
        ),
        _Contender(
            UNO_JSON,
            deposits,
            partial(_uno_round_trips, uno_json),
            lambda event: len(uno_json.encode(event)),
        ),
        _Contender(
            UNO_MSGPACK,
            deposits,
            partial(_uno_round_trips, uno_msgpack),
            lambda event: len(uno_msgpack.encode(event)),
        ),
        _Contender(
            RAW_MSGPACK,
            deposits,
            partial(
                _raw_round_trips, msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(MoneyDeposited)
            ),
            lambda event: len(msgspec.msgpack.encode(event)),
        ),
        _Contender(
            EVENTSOURCING,
            peer_events,
            partial(_eventsourcing_round_trips, mapper),
            lambda event: len(mapper.to_stored_event(event).state),
        ),
    ]


def _uno_round_trips(
    serializer: JsonSerializer | MsgPackSerializer, events: Sequence[Event]
) -> object:
    """Encode each event's data, then decode it by the type name and version stored with it."""
    encode, decode = serializer.encode, serializer.decode
    decoded = None
    for event in events:
        cls = type(event)
        decoded = decode(cls.event_type, cls.event_version, encode(event))
    return decoded


def _raw_round_trips(
    encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder,
    decoder: msgspec.json.Decoder[MoneyDeposited] | msgspec.msgpack.Decoder[MoneyDeposited],
    events: Sequence[MoneyDeposited],
) -> object:
    """Encode and decode each event with a decoder built for its class: no lookup, no checks."""
    encode, decode = encoder.encode, decoder.decode
    decoded = None
    for event in events:
        decoded = decode(encode(event))
    return decoded


def _eventsourcing_round_trips(mapper: Mapper[UUID], events: Sequence[MoneyDepositedES]) -> object:
    """Map each event to a ``StoredEvent`` and back."""
    to_stored, to_domain = mapper.to_stored_event, mapper.to_domain_event
    decoded = None
    for event in events:
        decoded = to_domain(to_stored(event))
    return decoded


def _eventsourcing_mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


def _as_eventsourcing(deposit: MoneyDeposited, version: int) -> MoneyDepositedES:
    return MoneyDepositedES(
        originator_id=deposit.account_id,
        originator_version=version,
        timestamp=deposit.at,
        account_id=deposit.account_id,
        amount=deposit.amount,
        currency=deposit.currency,
        reference=deposit.reference,
        at=deposit.at,
    )


def _report(contenders: list[_Contender], timings: dict[str, Timing], settings: Settings) -> str:
    rows = [
        [
            c.label,
            f"{timings[c.label].median_us:.2f}",
            timings[c.label].spread_us(),
            f"{timings[c.label].per_second:,.0f}",
            f"{c.mean_size():.0f}",
        ]
        for c in contenders
    ]
    results = markdown_table(
        ["Round trip of one event", "µs (median)", "µs (min - max)", "events/s", "stored bytes"],
        rows,
        align="lrrrr",
    )
    uno, floor = timings[UNO_JSON].median_ns, timings[RAW_JSON].median_ns
    peer = timings[EVENTSOURCING].median_ns
    msgpack_ratio = timings[UNO_MSGPACK].median_ns / timings[RAW_MSGPACK].median_ns
    encode_json = timings[ENCODE_UNO_JSON].median_ns / timings[ENCODE_RAW_JSON].median_ns
    encode_msgpack = timings[ENCODE_UNO_MSGPACK].median_ns / timings[ENCODE_RAW_MSGPACK].median_ns
    encodes = markdown_table(
        ["Encode one event", "µs (median)", "µs (min - max)", "events/s"],
        [
            [
                label,
                f"{timings[label].median_us:.2f}",
                timings[label].spread_us(),
                f"{timings[label].per_second:,.0f}",
            ]
            for label in (ENCODE_RAW_JSON, ENCODE_UNO_JSON, ENCODE_RAW_MSGPACK, ENCODE_UNO_MSGPACK)
        ],
        align="lrrr",
    )
    ratios = markdown_table(
        ["Comparison", "Ratio", "Target", "Result"],
        [
            [
                "uno vs eventsourcing (eventsourcing's time / uno's)",
                f"{peer / uno:.1f}x",
                f"≥ {PEER_TARGET}x",
                verdict(peer / uno, at_least=PEER_TARGET),
            ],
            [
                "uno vs raw msgspec, JSON (uno's time / msgspec's)",
                f"{uno / floor:.2f}x",
                f"≤ {FLOOR_TARGET}x",
                verdict(uno / floor, at_most=FLOOR_TARGET),
            ],
            [
                "uno vs raw msgspec, MessagePack (uno's time / msgspec's)",
                f"{msgpack_ratio:.2f}x",
                "",
                "",
            ],
            [
                "encode only, JSON: uno's (checked) / msgspec's",
                f"{encode_json:.2f}x",
                f"≤ {ENCODE_TARGET}x",
                verdict(encode_json, at_most=ENCODE_TARGET),
            ],
            [
                "encode only, MessagePack: uno's (checked) / msgspec's",
                f"{encode_msgpack:.2f}x",
                "",
                "",
            ],
        ],
        align="lrrl",
    )
    return f"""\
## Serialization

What is measured: the round trip of one event's **data**, from the domain event
object to its stored form and back to an equal object, for {EVENTS:,} recorded
deposits (a UUID, a `Decimal`, two strings and a UTC `datetime`). The events
are built before timing. Metadata and the store's envelope are not part of it.

- **uno**: `data = serializer.encode(event)`, then
  `serializer.decode(type(event).event_type, type(event).event_version, data)`:
  the stored form is the bytes plus the type name and version, the decode goes
  through the registry (upcasting included, none registered here).
- **eventsourcing**: `mapper.to_domain_event(mapper.to_stored_event(event))`
  with `UUIDAsHex`, `DecimalAsStr` and `DatetimeAsISO` registered. Its event class
  has the same fields plus its own `originator_id`, `originator_version` and
  `timestamp`; the first two become `StoredEvent` columns, the timestamp is
  encoded in the state along with the fields (one `datetime` more than uno's).
- **msgspec, hand-written**: `Decoder(MoneyDeposited).decode(Encoder().encode(event))`
  on uno's own event class: no registry lookup, no error mapping. The floor.

Each case runs once to warm up, then {settings.repeats} timed runs over all
events, taking turns with the other cases; the garbage collector runs before
each timed run. The table gives the median run and the fastest and slowest,
per event. "stored bytes" is the mean length of the encoded data.

The encode-only cases time `serializer.encode(event)` against the codec's
`Encoder().encode(event)`. uno's encode also proves the bytes decode back into
the class (each field's value of its declared type, no NaN in JSON) with a check
compiled once per class; that check, and the method call around the codec,
are what the ratio measures.

{machine_facts(("msgspec", "eventsourcing", "uno-core-events"))}

{results}

{encodes}

{ratios}
"""
