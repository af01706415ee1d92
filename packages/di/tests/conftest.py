"""Async tests run on asyncio: app-scoped async services are guarded with asyncio primitives."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
