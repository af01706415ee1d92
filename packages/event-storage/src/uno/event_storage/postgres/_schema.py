"""The PostgreSQL schema's names, and how its global order is kept.

Since schema version 6, each append takes a block of ``2**20`` positions from
a sequence (``{blocks}``) and numbers its events within it, so positions grow
in the order appends took their blocks. Readers must not read past a block
whose append may still commit; they read only below the *fence*: the oldest
block still in flight, or the next one to be taken. An append holds a
transaction advisory lock named by its block (two ``int4`` keys: this store's
``fence_tag`` and the block number) until its transaction ends, so the blocks
in flight are the ones in ``pg_locks``. PostgreSQL makes a commit visible
before it releases the transaction's locks, so a block whose lock is gone has
committed (readable in any later snapshot) or rolled back. Between taking a
block and locking it, an append is in flight but not yet in ``pg_locks``: it
first takes a shared lock of its own (block 0), and the fence function waits
for any backend that holds that lock but no block lock yet, a few
microseconds. The fence therefore depends only on this store's appends:
another transaction, open for hours in this database or another, holds no
such lock and delays no reader; an append that stays open holds readers back
at its own block, and never before it.

Each append makes sure its first position is above the stream's last one, so a
stream's events are in version order in the global log. An autocommit append
that expects an exact version gets there without a lock: it reads the event at
that version, and only then takes its block, which is therefore later than
that event's. The unique stream version settles a race between two such
appends. Other appends take the stream's advisory lock before their block,
and claim the stream's next version with their first event; if a lock-free
append took that version meanwhile, they read the stream again and take a
later block. A transaction's appends share its latest block while it has room
and comes after the stream's last event, so a transaction holds few locks.

Before version 6 positions were ``transaction id * 2**20 + n`` and readers
read below the oldest running transaction of the whole server, so any
transaction anywhere held every reader back; migration 6 starts the sequence
above every stored position and every transaction id, so positions keep
growing across the upgrade.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from uno.event_storage.exceptions import StoreConfigurationError

__all__ = [
    "BLOCK_BITS",
    "POSITION_BITS",
    "SQLSTATES",
    "Names",
    "fence_tag",
    "migration_lock_key",
]

POSITION_BITS = 20
"""Low bits of a global position that number events within one append's block."""
BLOCK_BITS = 43
"""Bits of a block number: positions stay below ``2**63``."""
_TAG_BITS = 20  # of the first lock key; the other 11 bits of it hold the block's high bits

SQLSTATES = {
    "duplicate_event_id": "UN001",
    "stream_deleted": "UN002",
    "wrong_expected_version": "UN003",
    "transaction_order_conflict": "UN004",
    "too_many_events": "UN005",
    "fence_isolation": "UN006",
}

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def fence_tag(schema: str, prefix: str) -> int:
    """Return the number that names one store's fence locks in ``pg_locks``.

    A hash of the store's schema and prefix, ``_TAG_BITS`` wide: two stores in
    one database share a tag once in about a million pairs, and then each
    one's readers also wait for the other's appends (slower, never wrong).
    """
    digest = hashlib.blake2b(f"{schema}.{prefix}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> (32 - _TAG_BITS)


class Names(NamedTuple):
    """Quoted, validated names of one store's objects."""

    schema: str
    prefix: str

    @classmethod
    def of(cls, schema: str, prefix: str) -> Names:
        """Validate ``schema`` and ``prefix`` (lowercase letters, digits, ``_``)."""
        if not _IDENTIFIER.fullmatch(schema):
            raise StoreConfigurationError(
                f"schema {schema!r} must be 1-40 lowercase letters, digits or '_', "
                "starting with a letter or '_'"
            )
        if prefix and not _IDENTIFIER.fullmatch(prefix):
            raise StoreConfigurationError(
                f"table_prefix {prefix!r} must be up to 40 lowercase letters, digits or '_'"
            )
        return cls(schema, prefix)

    def table(self, name: str) -> str:
        """Return the qualified name of a table or function of this store."""
        return f'"{self.schema}"."{self.prefix}{name}"'

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this store."""
        return f"{self.schema}.{self.prefix}events"

    @property
    def tag(self) -> int:
        """This store's fence tag (see ``fence_tag``)."""
        return fence_tag(self.schema, self.prefix)

    def render(self, template: str) -> str:
        """Replace ``{events}``-style placeholders with this store's qualified names."""
        names = {
            n: self.table(n)
            for n in (
                "events",
                "streams",
                "snapshots",
                "checkpoints",
                "migrations",
                "append",
                "append_known",
                "append_group",
                "blocks",
                "read_fence",
            )
        }
        tag = self.tag
        return template.format(
            schema=f'"{self.schema}"',
            channel=self.channel,
            bits=POSITION_BITS,
            fence_tag=tag,
            # The first int4 key of this store's fence locks: the tag, then a block's
            # high bits (a block's low 32 bits are the second key).
            fence_key=tag << (BLOCK_BITS - 32),
            block_high_mask=(1 << (BLOCK_BITS - 32)) - 1,
            block_shift=BLOCK_BITS - 32,
            max_block=(1 << BLOCK_BITS) - 1,
            block_setting=f"uno.block_{tag}",
            **names,
            **SQLSTATES,
        )


def migration_lock_key(names: Names) -> str:
    """Return the text whose hash is the advisory lock that serializes migrations."""
    return f"uno.event_storage.migrate:{names.schema}.{names.prefix}"
