"""FastAPI and Starlette adapters for uno command and query buses.

This distribution is reserved and importable; its features arrive with their
issue and are not here yet.
"""

__all__: list[str] = []
