"""The uno event store: memory, SQLite and PostgreSQL backends chosen by URL.

This distribution is reserved and importable; its features arrive with their
issue and are not here yet.
"""

__all__: list[str] = []
