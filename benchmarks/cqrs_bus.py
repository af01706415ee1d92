"""Command dispatch: one small command to its async handler, through each mediator.

Contenders: a direct ``await handler(command)`` (the floor); uno's
``CommandBus`` without behaviours and with four (validation, authorization,
logging at a disabled level, tracing with no SDK installed: what a service
runs in production without telemetry wired); and python-cqrs's
``RequestMediator`` as ``bootstrap`` makes it, which always adds its logging
middleware (it has no way to run without one). Each iteration builds nothing: the
command is made once and sent ``ITERATIONS`` times in one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import cqrs
import di
from cqrs.bootstrap import requests as cqrs_bootstrap

from benchmarks._harness import Settings, Timing, compare, machine_facts, markdown_table, verdict
from uno.cqrs import (
    AuthorizationBehaviour,
    BusBuilder,
    Command,
    LoggingBehaviour,
    TracingBehaviour,
    ValidationBehaviour,
)

__all__ = ["run"]

ITERATIONS = 20_000
HAND = "direct call (floor)"
UNO = "uno CommandBus"
UNO_PIPELINE = "uno CommandBus, 4 behaviours"
PYTHON_CQRS = "python-cqrs RequestMediator (its default logging middleware)"


class Deposit(Command):
    account_id: str
    amount: int


async def deposit(command: Deposit) -> int:
    return command.amount


class CqrsDeposit(cqrs.Request):
    account_id: str
    amount: int


class CqrsDeposited(cqrs.Response):
    amount: int


class CqrsDepositHandler(cqrs.RequestHandler[CqrsDeposit, CqrsDeposited]):
    @property
    def events(self) -> Sequence[Any]:
        return []

    async def handle(self, request: CqrsDeposit) -> CqrsDeposited:
        return CqrsDeposited(amount=request.amount)


def _cases(loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[], object]]:
    command = Deposit(account_id="a", amount=1)
    bare = BusBuilder().register(deposit).build().commands
    piped = (
        BusBuilder()
        .use(TracingBehaviour())
        .use(LoggingBehaviour())
        .use(ValidationBehaviour())
        .use(AuthorizationBehaviour())
        .register(deposit)
        .build()
        .commands
    )
    mediator = cqrs_bootstrap.bootstrap(
        di_container=di.Container(),
        commands_mapper=lambda mapper: mapper.bind(CqrsDeposit, CqrsDepositHandler),
    )
    theirs = CqrsDeposit(account_id="a", amount=1)

    def looped(send: Callable[[], Coroutine[Any, Any, object]]) -> Callable[[], object]:
        async def many() -> None:
            for _ in range(ITERATIONS):
                result = await send()
                if getattr(result, "amount", result) != 1:
                    raise AssertionError("a contender returned the wrong value")

        return lambda: loop.run_until_complete(many())

    return {
        HAND: looped(lambda: deposit(command)),
        UNO: looped(lambda: bare.send(command)),
        UNO_PIPELINE: looped(lambda: piped.send(command)),
        PYTHON_CQRS: looped(lambda: mediator.send(theirs)),
    }


def run(settings: Settings) -> str:
    """Time the contenders in turns and return the markdown section."""
    loop = asyncio.new_event_loop()
    try:
        timed = {
            t.label: t for t in compare(_cases(loop), ops=ITERATIONS, repeats=settings.repeats)
        }
    finally:
        loop.close()
    return _report(timed, settings)


def _report(timed: dict[str, Timing], settings: Settings) -> str:
    floor = timed[HAND].median_ns
    rows = [
        [
            label,
            f"{timing.median_us:.2f}",
            timing.spread_us(),
            f"{timing.median_ns / floor:.1f}x",
        ]
        for label, timing in timed.items()
    ]
    piped, bare, theirs = (timed[k].median_ns for k in (UNO_PIPELINE, UNO, PYTHON_CQRS))
    ratio_rows = [
        [
            "uno with 4 behaviours vs python-cqrs (python-cqrs's time / uno's)",
            f"{theirs / piped:.2f}x",
            "> 1x",
            verdict(theirs / piped, at_least=1.0),
        ],
        [
            "uno without behaviours vs python-cqrs (python-cqrs's time / uno's)",
            f"{theirs / bare:.2f}x",
            "",
            "",
        ],
        [
            "uno without behaviours vs a direct call (uno's time / the call's)",
            f"{bare / floor:.1f}x",
            "",
            "",
        ],
    ]
    results = markdown_table(
        ["Contender", "µs per send (median)", "µs (min - max)", "vs direct call"],
        rows,
        align="lrrr",
    )
    ratios = markdown_table(["Comparison", "Ratio", "Target", "Result"], ratio_rows, align="lrrl")
    facts = machine_facts(["uno-cqrs", "pydantic", "python-cqrs"])
    return f"""\
## CQRS: command dispatch

One small command (two fields) sent {ITERATIONS:,} times to an async handler
that returns a field, in one event loop; {settings.repeats} timed runs each,
in turns, median reported. The four behaviours are tracing (no SDK installed),
logging (at a disabled level), validation (the message checked again, no
custom rule) and authorization (a message that declares no roles).

{facts}

{results}

{ratios}
"""
