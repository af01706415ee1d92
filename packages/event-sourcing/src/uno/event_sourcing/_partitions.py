"""Partitions: a projection split by a hash of the stream id, one lease per partition.

Partition ``i`` of ``N`` holds the streams whose ``zlib.crc32`` of the
UTF-8 stream id is ``i`` modulo ``N``: stable across processes and Python
versions (unlike ``hash``), so every process agrees on who holds what. Each
partition has its own checkpoint and lease, both named ``<projection>#<i>/<N>``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Partition", "partition_of", "partitions_of"]


def partition_of(stream_id: str, count: int) -> int:
    """Return the partition (from 0) of ``stream_id`` among ``count`` partitions."""
    return zlib.crc32(stream_id.encode("utf-8", "surrogatepass")) % count


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` of ``count`` of one projection."""

    projection: str
    index: int
    count: int

    @property
    def checkpoint(self) -> str:
        """The name of the partition's checkpoint and of its lease."""
        return f"{self.projection}#{self.index}/{self.count}"

    def holds(self, stream_id: str) -> bool:
        """Return whether the partition's events include those of ``stream_id``."""
        return partition_of(stream_id, self.count) == self.index


def partitions_of(projection: str, count: int) -> list[Partition]:
    """Return the ``count`` partitions of a projection."""
    return [Partition(projection, index, count) for index in range(count)]
