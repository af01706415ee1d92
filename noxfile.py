"""Every check of the uno monorepo.

Sessions:
    tests      every package and tests-integration/ together, all extras (CI runs it)
    isolated   one session per package: that distribution installed alone, built
               as a wheel with only its declared dependencies, running its own tests
    lint       ruff check and ruff format --check
    typecheck  mypy --strict over every package, the examples and the benchmarks
    bench      benchmarks/ against the peers, written to docs/benchmarks.md
    demo       the example service on the embedded default
    docs       mkdocs build --strict
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())

# The peers the benchmarks compare uno with (also installed to type-check benchmarks/).
BENCH_PEERS = (
    "eventsourcing[postgres]>=9.3",
    "dishka>=1.10",
    "wireup>=2.13",
    "dependency-injector>=4.49",
    "python-cqrs>=5.3",
)

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_venv = "yes"


@functools.cache
def _project(package: str) -> dict[str, object]:
    with (ROOT / "packages" / package / "pyproject.toml").open("rb") as f:
        data: dict[str, object] = tomllib.load(f)
    return data


def _dist_to_package() -> dict[str, str]:
    out: dict[str, str] = {}
    for package in PACKAGES:
        meta = _project(package)["project"]
        assert isinstance(meta, dict)
        out[canonicalize_name(str(meta["name"]))] = package
    return out


def _local_requirements(package: str) -> list[str]:
    """Return the folders of `package` and every uno package it depends on, transitively."""
    by_dist = _dist_to_package()
    seen: list[str] = []
    todo = [package]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        meta = _project(current)["project"]
        assert isinstance(meta, dict)
        requirements = [*meta.get("dependencies", [])]
        for extra in meta.get("optional-dependencies", {}).values():
            requirements.extend(extra)
        if current == package:
            requirements.extend(_test_group(current))
        for requirement in requirements:
            name = canonicalize_name(Requirement(str(requirement)).name)
            if name in by_dist:
                todo.append(by_dist[name])
    return seen


def _with_extras(package: str) -> str:
    meta = _project(package)["project"]
    assert isinstance(meta, dict)
    extras = sorted(meta.get("optional-dependencies", {}))
    suffix = f"[{','.join(extras)}]" if extras else ""
    return f"packages/{package}{suffix}"


def _test_group(package: str, *, local: bool = True) -> list[str]:
    """Return the package's test requirements; ``local=False`` drops the uno distributions."""
    requirements = list(nox.project.dependency_groups(_project(package), "test"))
    if local:
        return requirements
    ours = _dist_to_package()
    return [r for r in requirements if canonicalize_name(Requirement(r).name) not in ours]


def _install_workspace(session: nox.Session, *extra: str) -> None:
    """Install every package editable, with all extras and all test dependencies."""
    editable = [arg for package in PACKAGES for arg in ("-e", _with_extras(package))]
    tests = sorted({req for package in PACKAGES for req in _test_group(package, local=False)})
    session.install(*editable, *tests, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Run every package's tests and tests-integration/ in one environment."""
    _install_workspace(session, "hatchling>=1.25")
    session.run(
        "pytest",
        *[f"packages/{package}/tests" for package in PACKAGES],
        "tests-integration",
        *session.posargs,
    )


@nox.session
@nox.parametrize("package", PACKAGES)
def isolated(session: nox.Session, package: str) -> None:
    """Install one distribution (built, not editable) alone and run its own tests."""
    local = [_with_extras(name) for name in _local_requirements(package)]
    session.install(*local, *_test_group(package, local=False))
    # --import-mode=importlib keeps src/ off sys.path: the tests see the installed wheel.
    session.run("pytest", f"packages/{package}/tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run mypy --strict over the sources, then each package's tests on their own."""
    _install_workspace(session, "mypy>=1.13", "nox>=2025.2.9", *BENCH_PEERS)
    session.run("mypy", *[f"packages/{p}/src" for p in PACKAGES], "examples", "benchmarks")
    session.run("mypy", "noxfile.py")
    for package in PACKAGES:
        session.run("mypy", f"packages/{package}/tests")
    session.run("mypy", "tests-integration")


@nox.session
def bench(session: nox.Session) -> None:
    """Compare uno with its peers and a hand-written baseline; update docs/benchmarks.md."""
    session.install(
        "-e",
        _with_extras("core-events"),
        "-e",
        "packages/event-storage[postgres]",
        "-e",
        "packages/di",
        "-e",
        "packages/event-sourcing",
        "-e",
        _with_extras("cqrs"),
        *BENCH_PEERS,
    )
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the example service on the embedded default."""
    session.install(
        "-e",
        _with_extras("core-events"),
        "-e",
        "packages/event-storage",
        "-e",
        "packages/event-sourcing",
        "-e",
        "packages/cqrs",
    )
    session.run("python", "examples/bank/demo.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with mkdocs (strict) and run its examples."""
    _install_workspace(session, "mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))
