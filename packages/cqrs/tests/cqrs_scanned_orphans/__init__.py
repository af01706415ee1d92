"""A package whose command has no handler: building from its scan fails."""

from __future__ import annotations

from uno.cqrs import Command


class Orphan(Command):
    pass
