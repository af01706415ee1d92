"""A package that BusBuilder.scan reads: a handler here, a message and a handler below."""

from __future__ import annotations

from uno.cqrs import Command, handler


class Ping(Command):
    text: str


@handler
async def ping(command: Ping) -> str:
    return f"pong {command.text}"


def not_a_handler(command: Ping) -> str:  # unmarked: scan leaves it alone
    return "never"
