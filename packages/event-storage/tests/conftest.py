"""Service addresses for the tests, and what to do when a service is down."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest


def require_service(url: str, name: str) -> None:
    """Skip the test when the service is down, or fail it when ``CI`` is set."""
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
    """The test PostgreSQL server's URL (skip, or fail under CI, when it is down)."""
    url = os.environ.get("UNO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    require_service(url, "postgres")
    return url
