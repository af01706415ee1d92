"""Notice, within one process, that a read model changed.

Read-model repositories call ``changed(name)`` after a write commits; a
query-result cache subscribes to the names it caches and drops its entries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["ReadModelChanges"]

logger = logging.getLogger("uno.cqrs")


class ReadModelChanges:
    """Listeners by read-model name, told after each committed change."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[[str], None]]] = {}

    def subscribe(self, read_model: str, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(read_model)`` after each change; return a function that stops it."""
        listeners = self._listeners.setdefault(read_model, [])
        listeners.append(listener)

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return unsubscribe

    def changed(self, read_model: str) -> None:
        """Tell the read model's listeners that it changed (a failing listener is logged)."""
        for listener in list(self._listeners.get(read_model, ())):
            try:
                listener(read_model)
            except Exception:
                logger.exception("a listener of read model %r failed", read_model)
