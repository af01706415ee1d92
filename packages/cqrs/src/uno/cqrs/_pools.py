"""Opening a PostgreSQL connection pool the way every SQL part of uno.cqrs wants it."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool

__all__ = ["CONNECT_ERRORS", "check_pool_sizes", "open_autocommit_pool"]

CONNECT_ERRORS = (psycopg.Error, psycopg_pool.PoolTimeout, OSError)
"""What opening a pool raises when the database cannot be reached."""


def check_pool_sizes(min_size: int, max_size: int) -> str | None:
    """Return what is wrong with the pool sizes, or ``None``."""
    if min_size < 0 or max_size < max(1, min_size):
        return (
            "need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1, got "
            f"{min_size} and {max_size}"
        )
    return None


async def open_autocommit_pool(
    url: str, *, min_size: int, max_size: int, connect_timeout: float, name: str
) -> psycopg_pool.AsyncConnectionPool[Any]:
    """Open a pool of autocommit connections to ``url`` (any ``postgres*://`` scheme).

    Raises:
        One of ``CONNECT_ERRORS``: the database cannot be reached within ``connect_timeout``;
            the pool is closed again.
    """
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        "postgresql://" + url.partition("://")[2],
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=connect_timeout,
        kwargs={"autocommit": True},
        name=name,
    )
    try:
        await pool.open(wait=True, timeout=connect_timeout)
    except BaseException:
        await pool.close()
        raise
    return pool
