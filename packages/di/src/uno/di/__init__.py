"""A validated, compiled dependency-injection container.

This distribution is reserved and importable; its features arrive with their
issue and are not here yet.
"""

__all__: list[str] = []
