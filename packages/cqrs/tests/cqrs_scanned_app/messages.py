"""A query and its class handler, in a submodule."""

from __future__ import annotations

from uno.cqrs import Query, handler


class Echo(Query):
    text: str


@handler
class EchoHandler:
    def handle(self, query: Echo) -> str:
        return query.text
