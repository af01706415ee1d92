"""Read models in SQLite (stdlib ``sqlite3`` with JSON1), off the event loop."""

from uno.cqrs.read_models.sqlite._repository import SQLiteRepository

__all__ = ["SQLiteRepository"]
