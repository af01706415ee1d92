"""Errors raised by uno.cqrs.

Every error carries a stable ``code`` (listed in docs/errors.md) and a message
that says what happened and what to do::

    CqrsError                           cqrs.error

The buses, the pipeline behaviours and the read models add their errors under
``CqrsError`` as they land.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["CqrsError"]


class CqrsError(Exception):
    """The root of every uno.cqrs error."""

    code: ClassVar[str] = "cqrs.error"
