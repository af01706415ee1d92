"""uno's benchmarks: each module times uno against its peers and a hand-written floor.

Run them with ``nox -s bench`` or ``python -m benchmarks [--quick] [NAME ...]``;
each writes its own section of ``docs/benchmarks.md``.
"""
