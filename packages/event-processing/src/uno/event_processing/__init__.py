"""Event handlers, middleware pipelines, retries, dead letters and broker transports for uno.

This distribution is reserved and importable; its features arrive with their
issue and are not here yet.
"""

__all__: list[str] = []
