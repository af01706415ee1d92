"""Events, metadata, serialization, upcasting and the protocols uno packages share.

Define events as frozen ``msgspec`` structs with a stable name and version,
register them, and serialize them through the registry::

    from uno.events import Event, EventRegistry, JsonSerializer

    class MoneyDeposited(Event):
        event_type = "bank.MoneyDeposited"
        amount: int

    registry = EventRegistry()
    registry.register(MoneyDeposited)
    serializer = JsonSerializer(registry)
    data = serializer.encode(MoneyDeposited(amount=10))
    assert serializer.decode("bank.MoneyDeposited", 1, data) == MoneyDeposited(amount=10)
"""

from uno.events import exceptions
from uno.events._clock import Clock, ManualClock, SystemClock
from uno.events._event import Event, validate_event_type
from uno.events._handling import (
    COMMAND_ID_HEADER,
    CommandSender,
    EventHandler,
    EventPublisher,
)
from uno.events._identifiers import uuid7
from uno.events._leases import Lease, LeaseStore
from uno.events._metadata import EventMetadata, RecordedEvent
from uno.events._registry import EventRegistry
from uno.events._serialization import JsonSerializer, MsgPackSerializer, Serializer
from uno.events._store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    CheckpointStore,
    Direction,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RawEvent,
    RawLogReader,
    Snapshot,
    SnapshotStore,
    StoreTransaction,
    StreamAppend,
    StreamState,
    Subscription,
    TransactionalEventStore,
)
from uno.events._streams import MAX_STREAM_ID_LENGTH, validate_stream_id
from uno.events._upcasting import RawUpcaster, TypedUpcaster, Upcaster, typed_upcaster, upcaster
from uno.events.exceptions import (
    DuplicateEventId,
    DuplicateEventType,
    EventDecodeError,
    EventDefinitionError,
    EventEncodeError,
    EventRegistryError,
    EventStoreError,
    EventTooLarge,
    InvalidArgument,
    InvalidStreamId,
    SerializationError,
    StoreUnavailable,
    StreamDeleted,
    TransactionOrderConflict,
    UnknownEventType,
    UnoEventsError,
    UnregisteredEvent,
    UpcasterChainError,
    UpcastError,
    WrongExpectedVersion,
)

__all__ = [
    "ANY",
    "COMMAND_ID_HEADER",
    "MAX_STREAM_ID_LENGTH",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "CheckpointStore",
    "Clock",
    "CommandSender",
    "Direction",
    "DuplicateEventId",
    "DuplicateEventType",
    "Event",
    "EventDecodeError",
    "EventDefinitionError",
    "EventEncodeError",
    "EventHandler",
    "EventMetadata",
    "EventPublisher",
    "EventRegistry",
    "EventRegistryError",
    "EventStore",
    "EventStoreError",
    "EventTooLarge",
    "ExpectedVersion",
    "InvalidArgument",
    "InvalidStreamId",
    "JsonSerializer",
    "Lease",
    "LeaseStore",
    "ManualClock",
    "MsgPackSerializer",
    "NewEvent",
    "RawEvent",
    "RawLogReader",
    "RawUpcaster",
    "RecordedEvent",
    "SerializationError",
    "Serializer",
    "Snapshot",
    "SnapshotStore",
    "StoreTransaction",
    "StoreUnavailable",
    "StreamAppend",
    "StreamDeleted",
    "StreamState",
    "Subscription",
    "SystemClock",
    "TransactionOrderConflict",
    "TransactionalEventStore",
    "TypedUpcaster",
    "UnknownEventType",
    "UnoEventsError",
    "UnregisteredEvent",
    "UpcastError",
    "Upcaster",
    "UpcasterChainError",
    "WrongExpectedVersion",
    "exceptions",
    "typed_upcaster",
    "upcaster",
    "uuid7",
    "validate_event_type",
    "validate_stream_id",
]
