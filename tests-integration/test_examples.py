"""The examples run on the public API and do what they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_bank_demo_tells_the_whole_story() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bank" / "demo.py")],
        check=True,
        capture_output=True,
        text=True,
    )
    out = result.stdout
    assert "Ada  balance  100" in out
    assert "refused: Cy cannot withdraw 50: the balance is 5 [code bank.insufficient_funds]" in out
    assert "Cy's stream still holds 2 events." in out
    assert "loaded at version 2, the account is now at 3." in out
    assert "Ada's balance is 10." in out
    assert "transfer t-1 (Ada -> Cy, 5): completed" in out
    assert "transfer t-2 (Ada -> Bob, 4): compensated" in out
    assert "Ada 5, Cy 10" in out
    assert "Latest snapshot at version 5; loading Ada replays 2 event(s)" in out
    assert "balances: {'ada': 5, 'bob': 20, 'cy': 10}" in out
    assert "status: caught_up" in out
    assert "lag 0 events" in out
    assert "progress: 0/12, 12/12; 12 events applied" in out
    assert "balances after the rebuild: {'ada': 5, 'bob': 20, 'cy': 10}" in out
    assert "GetBalance(ada) -> 5; GetBalance(zoe) -> None" in out
    assert "balance >= 10: Bob 20, Cy 10" in out
    assert out.rstrip().endswith("done.")


def test_event_store_tour_runs_and_shows_upcasting() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "event_store_tour.py")],
        check=True,
        capture_output=True,
        text=True,
    )
    out = result.stdout
    assert "encoded bank.MoneyDeposited v3 as JSON" in out
    assert "currency='EUR'" in out  # version 1 data, upcast with the assumed currency
    assert "amount=Decimal('10.10')" in out  # then to an exact decimal
    assert "'events.unknown_event_type'" in out
    assert "old versions upcast on read." in out
    assert "a retry wrote nothing: True" in out
    assert "versions [3, 2]" in out  # the transfer reached both streams
    assert "Ada 70, Bob 30" in out  # the projection, from the global log
    assert "['100', '-30', '30']" in out
    assert out.rstrip().endswith("done.")
