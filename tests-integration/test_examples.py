"""The examples run on the public API and do what they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_bank_demo_runs_and_shows_upcasting() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bank" / "demo.py")],
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
