"""The test services the kit needs: skip or fail when one is down."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

__all__ = ["postgres_url", "require_service"]


def require_service(url: str, name: str) -> None:
    """Skip the calling test when the service at ``url`` is down, or fail it when ``CI`` is set.

    ``name`` names the service in the message and in the variable that sets
    its address, ``UNO_TEST_<NAME>_URL``.
    """
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {parts.hostname}:{parts.port} ({exc})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI needs it (start it, or set UNO_TEST_{name.upper()}_URL)")
        pytest.skip(f"{message}; set UNO_TEST_{name.upper()}_URL or start it to run this test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL server's URL, from ``UNO_TEST_POSTGRES_URL`` (skip or fail when down).

    Import it into a ``conftest.py`` to use it: ``from uno.event_storage.testing
    import postgres_url``.
    """
    url = os.environ.get("UNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    require_service(url, "postgres")
    return url
