"""Time-ordered UUIDv7 event identifiers (RFC 9562)."""

from __future__ import annotations

import os
import random
import threading
import time
from uuid import UUID, SafeUUID

__all__ = ["uuid7"]

_COUNTER_BITS = 42  # 12 bits of rand_a and the top 30 of rand_b (RFC 9562 §6.2, method 1)
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_RANDOM_BITS = 32  # the rest of rand_b stays random, so ids from two processes differ

# Seeded from os.urandom, and again in every forked child so that two processes
# never share a random sequence. Cheaper than a system call per id.
_random = random.Random()  # noqa: S311 - uniqueness, not secrecy, is needed here
os.register_at_fork(after_in_child=_random.seed)

_lock = threading.Lock()
_new_object = object.__new__
_set_attribute = object.__setattr__
_getrandbits = _random.getrandbits
_UNKNOWN = SafeUUID.unknown
_FIXED_BITS = 0x7 << 76 | 0b10 << 62  # the version (7) and the variant (RFC 9562)
_last_ms = -1
_counter = 0
_high = 0  # the bits that stay the same within _last_ms: its time, version and variant


def uuid7() -> UUID:
    """Return a new UUIDv7.

    Ids from one process are strictly increasing, also within one millisecond
    and across threads: a 42-bit counter, seeded at random each millisecond,
    orders them. If the wall clock steps back, the previous millisecond is kept
    so order holds. 32 random bits keep ids of separate processes apart.
    """
    global _last_ms, _counter, _high  # noqa: PLW0603 - one process-wide sequence, guarded by _lock
    random_tail = _getrandbits(_RANDOM_BITS)
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _high = (now_ms & 0xFFFF_FFFF_FFFF) << 80 | _FIXED_BITS
            # The top counter bit starts at 0, leaving room for 2**41 ids in this millisecond.
            _counter = _getrandbits(_COUNTER_BITS - 1)
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _high = (_last_ms & 0xFFFF_FFFF_FFFF) << 80 | _FIXED_BITS
                _counter = 0
        high, counter = _high, _counter
    # UUID(int=...) re-checks a value built here to be in range: skip its checks.
    uuid = _new_object(UUID)
    _set_attribute(
        uuid, "int", high | (counter >> 30) << 64 | (counter & 0x3FFF_FFFF) << 32 | random_tail
    )
    _set_attribute(uuid, "is_safe", _UNKNOWN)
    return uuid
