"""The README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path


def test_the_readme_example_runs() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None
    exec(compile(match.group(1), "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
