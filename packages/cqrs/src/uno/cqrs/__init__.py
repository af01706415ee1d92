"""Command and query buses, middleware and read-model repositories for uno.

This distribution is reserved and importable; its features arrive with their
issue and are not here yet.
"""

__all__: list[str] = []
